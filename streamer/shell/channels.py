"""Faust topic objects for every logical topic. Values stay raw bytes: the core decodes
inputs itself (so a bad payload is a dead-letter record, not a Faust decode crash) and
encodes outputs with orjson."""

from __future__ import annotations

from streamer.shell.app import app, settings

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}

inputs = {role: app.topic(settings.topics[role], partitions=settings.partitions, **RAW) for role in settings.input_roles}
outputs = {
    "customer-scores": app.topic(settings.topics["customer-scores"], partitions=settings.output_partitions, compacting=True, **RAW),
    "segment-changes": app.topic(settings.topics["segment-changes"], partitions=settings.output_partitions, **RAW),
    "campaign-triggers": app.topic(settings.topics["campaign-triggers"], partitions=settings.output_partitions, **RAW),
    "dead-letter": app.topic(settings.topics["dead-letter"], partitions=settings.output_partitions, **RAW),
    "audit": app.topic(settings.topics["audit"], partitions=settings.output_partitions, **RAW),
    "model-state": app.topic(settings.topics["model-state"], partitions=1, compacting=True, **RAW),
}
#: actual topic name -> logical role
role_of_topic = {settings.topics[role]: role for role in settings.input_roles}
