"""docs/backends.md's torch.export example with a real ultralytics network: a dynamic batch dimension."""

from __future__ import annotations

import json

import pytest
import torch

from pyinfer.engine import Engine, EngineConfig

pytestmark = pytest.mark.reference


def test_the_documented_pt2_export_of_an_ultralytics_network_runs_any_batch(tmp_path, monkeypatch):
    from ultralytics import YOLO

    monkeypatch.chdir(tmp_path)
    # As in docs/backends.md, with yolov8n.yaml (random weights, no download) for yolo11n.pt.
    net = YOLO("yolov8n.yaml").model.fuse().eval().float()
    batch = torch.export.Dim("batch", min=1, max=64)
    with pytest.raises(Exception, match="Constraints violated"):  # why the docs' example batch is 2, not 1
        torch.export.export(net, (torch.zeros(1, 3, 640, 640),), dynamic_shapes=({0: batch},))
    program = torch.export.export(net, (torch.zeros(2, 3, 640, 640),), dynamic_shapes=({0: batch},))
    meta = {"imgsz": [640, 640], "names": net.names, "task": "detect"}
    torch.export.save(program, "yolov8n.pt2", extra_files={"config.txt": json.dumps(meta)})

    engine = Engine.build(EngineConfig(str(tmp_path / "yolov8n.pt2"), device="cpu", max_batch=3))
    assert engine.model.fixed_batch is None and engine.decoder_choice.name == "yolov8"
    assert (engine.input_width, engine.input_height, len(engine.labels)) == (640, 640, 80)
    for n in (1, 3):
        frames = torch.full((n, 360, 480, 3), 114, dtype=torch.uint8)
        assert len(engine.infer(frames)) == n
