"""Frame access: from a GStreamer buffer to a (H, W, C) uint8 tensor, without copying pixels."""
