"""The pure core: everything here is plain Python that tests, replays and benchmarks can call.

Data path, top to bottom::

    events.decode        raw bytes -> Event            (or InvalidEvent -> dead-letter)
    state.apply          (CustomerState, Event) -> CustomerState
    features.compute     (CustomerState, now) -> Features
    scoring.score        Features -> Scores
    segments.assign      (Features, Scores, ranks) -> {family: segment}
    outputs.*            -> CloudEvents for customer-scores / segment-changes / dead-letter
    engine.Engine        ties them together per partition, with the event-time clock
"""
