"""clv-streamer: real-time customer lifetime value, churn risk and segments from Kafka events.

The package is layered so the data path reads top to bottom:

* :mod:`streamer.core` — pure Python: decode/validate, state update, features, scores,
  segment rules and outgoing events. No Kafka, no Faust, no Prometheus.
* :mod:`streamer.shell` — the thin Faust shell: app, topics, table, agent, web pages.
* :mod:`streamer.metrics` — the only module that imports ``prometheus_client``.
"""

__version__ = "0.1.0"
