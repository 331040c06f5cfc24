"""Pure tensor and array operations: letterbox, box conversions, NMS."""
