"""backend=export: ``.pt2`` programs (torch.export.save), and the scan that keeps them pickle-free."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from pyinfer._gi import Gst
from pyinfer.backends import load_model
from pyinfer.backends.export import unsafe_contents
from pyinfer.errors import ConfigError
from support import FIXED_TABLE, FixedBoxes

SRC = "videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=48"


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


def _rewrite(src: Path, dst: Path, replace: dict[str, bytes]) -> Path:
    """Copy a zip archive, replacing the members whose name ends with a key of ``replace``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info, data)
    return dst


@pytest.fixture(scope="module")
def fixed_pt2(tmp_path_factory) -> Path:
    """FixedBoxes exported with a static batch of 2 and a static 320x320 input, no metadata."""
    import torch

    program = torch.export.export(FixedBoxes.build(FIXED_TABLE).eval(), (torch.zeros(2, 3, 320, 320),))
    path = tmp_path_factory.mktemp("pt2") / "fixed-b2.pt2"
    torch.export.save(program, str(path))
    return path


def test_a_pt2_program_gives_the_torchscript_detections(shapes_pt2, scene_frames, reference, detect, assert_same):
    assert unsafe_contents(shapes_pt2) is None
    assert_same(detect(str(shapes_pt2), scene_frames, "batch-size=3"), reference)


def test_a_static_batch_program_splits_and_pads(fixed_pt2, run_pipeline):
    import torch

    model = load_model(str(fixed_pt2), "cpu")
    assert (model.backend, model.fixed_batch, model.input_size) == ("export", 2, (320, 320))  # from the shapes
    assert model.forward(torch.zeros(3, 3, 320, 320))[0].shape == (3, 7, 4)
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={fixed_pt2} decoder=yolov8 batch-size=3 ! appsink name=sink")
    assert res.ok, res.error
    assert [d.class_id.tolist() for d in res.detections] == [[0, 2], [0, 2]]


def test_bf16_reaches_lifted_constants(shapes_pt2):
    import torch

    x = torch.rand(1, 3, 384, 384, generator=torch.Generator().manual_seed(0))
    fp32 = load_model(str(shapes_pt2), "cpu").forward(x)[0]
    bf16 = load_model(str(shapes_pt2), "cpu", precision="bf16").forward(x.bfloat16())[0]
    assert bf16.dtype == torch.float32
    assert (bf16[:, :4] - fp32[:, :4]).abs().max() < 4  # boxes, input pixels
    assert (bf16[:, 4:] - fp32[:, 4:]).abs().max() < 0.05  # scores


def test_example_inputs_that_need_full_unpickling_are_refused_and_never_run(fixed_pt2, tmp_path, run_pipeline):
    import io

    import torch

    marker = tmp_path / "ran"
    buf = io.BytesIO()
    torch.save(_Payload(str(marker)), buf)
    evil = _rewrite(fixed_pt2, tmp_path / "evil.pt2", {"data/sample_inputs/model.pt": buf.getvalue()})
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={evil} decoder=yolov8 ! appsink name=sink")
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS)
    assert "example inputs need full unpickling" in res.error.message and "allow-pickle" in res.error.message
    assert not marker.exists()
    # What the scan protects from: torch.export.load itself falls back to full unpickling and runs the payload.
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever torch raises after unpickling
        load_model(str(evil), "cpu", allow_pickle=True)
    assert marker.read_text() == "ran"


def test_pickled_weights_and_compiled_code_are_refused(fixed_pt2, tmp_path):
    with zipfile.ZipFile(fixed_pt2) as zf:
        name = next(n for n in zf.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(zf.read(name))
    for entry in config["config"].values():
        entry["use_pickle"] = True
    pickled = _rewrite(fixed_pt2, tmp_path / "pickled.pt2", {"model_weights_config.json": json.dumps(config).encode()})
    with pytest.raises(ConfigError, match="pickled Python object"):
        load_model(str(pickled), "cpu")
    aoti = tmp_path / "aoti.pt2"
    _rewrite(fixed_pt2, aoti, {})
    with zipfile.ZipFile(aoti, "a") as zf:
        zf.writestr("fixed-b2/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(ConfigError, match="AOTInductor package"):
        load_model(str(aoti), "cpu")


def test_a_file_that_is_not_a_pt2_archive_names_the_file(tmp_path, run_pipeline):
    path = tmp_path / "junk.pt2"
    path.write_bytes(b"junk")
    res = run_pipeline(f"{SRC} ! pyinfer model-engine={path} ! appsink name=sink")
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.OPEN_READ)
    assert f"model file {path} is not a torch.export (.pt2) archive" in res.error.message
