"""Detection messages (schema version 1): JSON built from Detections, without GStreamer."""

from __future__ import annotations

from pyinfer.messages.schema import (
    SCHEMA_VERSION,
    FrameHeader,
    MessageBuilder,
    MetadataError,
    iso_timestamp,
    load_schema,
    object_records,
)

__all__ = [
    "SCHEMA_VERSION",
    "FrameHeader",
    "MessageBuilder",
    "MetadataError",
    "iso_timestamp",
    "load_schema",
    "object_records",
]
