"""Outputs that stop fitting mid-stream: a class count that changes, a batch smaller than the frames given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinfer.accel import AccelSettings, FastPath
from pyinfer.backends._torch import wrap_module
from pyinfer.engine import Engine
from pyinfer.errors import DecodeError


class TableModel(torch.nn.Module):
    """Returns ``table`` (4 + nc, N) for every frame, or for the first ``batch`` frames only when set."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        self.batch: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0] if self.batch is None else self.batch
        return self.table.unsqueeze(0).expand(n, -1, -1) + x[:n].mean() * 0


def table(nc: int) -> torch.Tensor:
    t = torch.zeros(4 + nc, 3)
    t[:4] = torch.tensor([[100.0, 200.0, 300.0], [100.0, 100.0, 100.0], [40.0, 40.0, 40.0], [40.0, 40.0, 40.0]])
    t[4 + nc - 1] = 0.9  # every box is of the last class
    return t


def engine_for(module: TableModel, decoder: str = "yolov8") -> Engine:
    model = wrap_module(module.eval(), path="test:table", device=torch.device("cpu"), precision="fp32",
                        backend="module", metadata={"imgsz": [320, 320]})  # fmt: skip
    engine = Engine(model, decoder, (), (320, 320))
    engine.warm_up()
    return engine


FRAMES = torch.zeros(2, 240, 320, 3, dtype=torch.uint8)


@pytest.mark.parametrize(("before", "after"), [(3, 5), (5, 3), (80, 1)])
def test_a_class_count_changing_mid_stream_is_a_decode_error_naming_both_counts(before, after):
    module = TableModel(table(before))
    engine = engine_for(module)
    assert engine.num_classes == before
    assert [d.class_id.tolist() for d in engine.infer(FRAMES)] == [[before - 1] * 3] * 2
    module.table = table(after)
    want = rf"test:table now returns {after} class(es)? .*returned {before} when it was loaded"
    with pytest.raises(DecodeError, match=want):
        engine.infer(FRAMES)


@pytest.mark.parametrize("returned", [1, 3])
def test_a_model_returning_another_batch_size_is_a_decode_error_naming_both_sizes(returned):
    module = TableModel(table(3))
    engine = engine_for(module)
    module.batch = returned
    with pytest.raises(DecodeError, match=rf"test:table returned results for {returned} frames? .*batch of 2"):
        engine.infer(FRAMES)


def test_the_fast_path_reports_a_smaller_batch_the_same_way():
    module = TableModel(table(3))
    engine = engine_for(module)
    module.batch = 1
    engine.fast = FastPath(engine.model, engine.decoder, (320, 320), AccelSettings(), fixed_decode=True)
    with pytest.raises(DecodeError, match=r"returned results for 1 frame .*batch of 2"):
        engine.infer(FRAMES)


def test_a_batch_of_the_right_size_passes_the_checks():
    engine = engine_for(TableModel(table(2)))
    got = engine.infer(torch.from_numpy(np.zeros((3, 100, 100, 3), np.uint8)))
    assert [len(d) for d in got] == [3, 3, 3]
