"""GStreamer elements: thin translators between buffers/properties and the pyinfer library."""
