"""``.pt2`` programs saved by ``torch.export.save``.

``torch.export.load`` is not pickle-free: its docstring warns it "uses pickle under the hood". In torch 2.14
plain weights and constants are raw bytes described by JSON, but (a) the saved example inputs are a
``torch.save`` pickle, loaded ``weights_only=True`` with a silent fallback to full unpickling when that fails,
(b) tensor-subclass weights are loaded with ``weights_only=False``, (c) opaque constants with ``pickle.loads``,
(d) archives from torch <= 2.7 keep their weights as pickles, and (e) AOTInductor packages carry compiled
shared libraries that it loads into the process. So, unless ``allow-pickle=true``, the archive is scanned
first (its JSON configs, and the example inputs with the restricted ``weights_only`` unpickler) and refused
if loading it would take any of those paths.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from pyinfer.backends.base import LoadedModel
from pyinfer.backends.metadata import parse_config
from pyinfer.errors import ModelError


def unsafe_contents(path: Path) -> str | None:
    """Why loading this .pt2 would run more than the restricted unpickler, or None if it would not.

    Raises:
        ModelError: the file is not a zip archive at all.
    """
    import torch

    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"model file {path} is not a torch.export (.pt2) archive: {exc}") from exc
    with zf:
        for info in zf.infolist():
            name = info.filename.split("/", 1)[-1]  # entries sit under one folder named after the archive
            if name == "serialized_exported_program.json" or name.endswith("serialized_state_dict.pt"):
                return "an archive from torch <= 2.7, whose weights are pickled"
            if name.startswith("data/aotinductor/"):
                return "an AOTInductor package, with compiled code that is loaded into the process"
            if name.startswith(("data/weights/", "data/constants/")):
                if name.endswith(".json"):
                    config = json.loads(zf.read(info)).get("config", {})
                    for fqn, entry in config.items():
                        if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(
                            ("weight_", "tensor_")
                        ):
                            return f"an archive whose constant or weight {fqn!r} is a pickled Python object"
                elif name.endswith(".pt"):
                    return "an archive whose weights are pickled"
            if name.startswith("data/sample_inputs/"):
                try:  # the same bytes torch.export.load reads: if this works, its weights_only load works too
                    torch.load(io.BytesIO(zf.read(info)), weights_only=True)
                except Exception:
                    return "an archive whose example inputs need full unpickling"
    return None


def _static_input(program: object) -> tuple[int | None, tuple[int, int] | None]:
    """(fixed batch size, (width, height)) of the program's first user input, each None when symbolic."""
    user_inputs = set(program.graph_signature.user_inputs)  # type: ignore[attr-defined]
    for node in program.graph.nodes:  # type: ignore[attr-defined]
        if node.op == "placeholder" and node.name in user_inputs:
            shape = getattr(node.meta.get("val"), "shape", None)
            if shape is None or len(shape) != 4:
                return None, None
            batch = shape[0] if isinstance(shape[0], int) else None
            size = (shape[3], shape[2]) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
            return batch, size
    return None, None


def load_export(path: Path, device: str, *, precision: str = "fp32", allow_pickle: bool = False) -> LoadedModel:
    """Load a ``torch.export`` program onto ``device``.

    Metadata: an ``extra_files={"config.txt": json.dumps({...})}`` saved with the program, as TorchScript.
    A program exported with a static batch dimension runs in chunks of that size (padded); one with a static
    input height and width gives the input size when the metadata has none.

    Raises:
        ConfigError: loading would unpickle (see the module docstring) and ``allow_pickle`` is off.
        ModelError: not a loadable program.
    """
    import torch

    from pyinfer.backends._torch import cast, wrap_module
    from pyinfer.backends.torchscript import pickle_refused

    if not allow_pickle:
        reason = unsafe_contents(path)
        if reason is not None:
            raise pickle_refused(path, reason)
    extra = {"config.txt": ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model file {path} is not a loadable torch.export program: {first}") from exc
    batch, size = _static_input(program)
    dev = torch.device(device)
    if dev.type != "cpu":
        # Moves parameters, buffers and the device arguments baked into the graph (torch.full(device=...)).
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, dev)
    module: torch.nn.Module = program.module()
    module, precision = cast(module, precision, dev, str(path))
    raw = extra["config.txt"]
    cfg = parse_config(raw.decode(errors="replace") if isinstance(raw, bytes) else raw)
    return wrap_module(
        module,
        path=str(path),
        device=dev,
        precision=precision,
        backend="export",
        metadata=cfg,
        fixed_batch=batch,
        input_size=size,
    )
