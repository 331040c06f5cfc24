"""pyinfer with models whose outputs go wrong: NaN candidates pass without detections, a short batch is an ERROR."""

from __future__ import annotations

import math

import numpy as np

from pyinfer._gi import Gst
from support import FIXED_TABLE, FixedBoxes, save_torchscript

SRC = "videotestsrc num-buffers=4 ! video/x-raw,format=RGB,width=320,height=240"
CONFIG = {"imgsz": [320, 320], "names": {"0": "a", "1": "b", "2": "c"}}


def test_a_nan_candidate_is_dropped_and_the_stream_goes_on(run_pipeline, tmp_path):
    import torch

    table = FIXED_TABLE.copy()
    table[2, 3] = math.nan  # the fourth anchor (class 2, score 0.2 < 0.25 by default): make it a candidate
    table[6, 3] = 0.95
    path = save_torchscript(FixedBoxes.build(table), tmp_path / "nan.torchscript", CONFIG, torch.zeros(1, 3, 320, 320))
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} decoder=yolov8 batch-size=2 ! appsink name=sink")
    assert res.ok, res.error.message if res.error else res.message
    assert [len(d) for d in res.detections] == [2, 2, 2, 2]  # the NaN box is gone, the two good ones stay
    assert all(np.isfinite(d.xyxy).all() for d in res.detections)
    assert len(res.warnings) == 1  # said once (rate-limited), naming the model's output
    assert "model output 0" in res.warnings[0] and "NaN or infinite" in res.warnings[0]


def test_a_model_returning_fewer_frames_than_the_batch_is_a_decode_error_naming_both(run_pipeline, tmp_path):
    import torch

    class OneFrame(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("table", torch.from_numpy(FIXED_TABLE))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.table.unsqueeze(0) + x[:1, :1, :1, :1].flatten(1).sum(1).view(-1, 1, 1) * 0

    path = save_torchscript(OneFrame(), tmp_path / "one.torchscript", CONFIG, torch.zeros(2, 3, 320, 320))
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} decoder=yolov8 batch-size=2 ! appsink name=sink")
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.StreamError.quark(), Gst.StreamError.DECODE), res.error.message
    assert "returned results for 1 frame" in res.error.message and "batch of 2" in res.error.message
