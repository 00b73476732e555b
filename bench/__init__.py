"""`make bench`: the worker's throughput, latency, memory, readiness and refit time, measured
against a raw aiokafka ceiling on the embedded broker. Entry point: ``python -m bench.run``."""
