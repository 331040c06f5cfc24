"""The ``pyinfer`` command: env, models, scene, detect, eval, doctor."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import site
import sys
import time
from pathlib import Path
from typing import Any

from pyinfer import __version__
from pyinfer.params import DEFAULT_PARAMS

PACKAGE_DIR = Path(__file__).resolve().parent


def plugin_path() -> Path:
    """The folder to put on GST_PLUGIN_PATH (gst-python's loader scans its ``python/`` subfolder)."""
    return PACKAGE_DIR / "gst"


def python_path() -> list[str]:
    """What the gst-python loader's interpreter needs on sys.path: pyinfer itself and its dependencies."""
    paths = [str(PACKAGE_DIR.parent)]
    for p in site.getsitepackages():
        if p not in paths and Path(p).is_dir():
            paths.append(p)
    return paths


def cmd_env(args: argparse.Namespace) -> int:
    """GST_PLUGIN_PATH for the plugin folder, and PYINFER_PYTHONPATH, which only pyinfer's loader shims read
    (src/pyinfer/gst/python/*.py put it on their interpreter's sys.path): PYTHONPATH would also reach every
    other Python program started from that shell."""
    gst = shlex.quote(str(plugin_path()))
    py = shlex.quote(":".join(python_path()))
    print(f"export GST_PLUGIN_PATH={gst}${{GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}}")
    print(f"export PYINFER_PYTHONPATH={py}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from pyinfer.zoo import EMBEDDED, get_model

    if args.path:
        try:
            print(get_model(args.path).path)
        except KeyError as exc:
            print(f"pyinfer: {exc.args[0]}", file=sys.stderr)
            return 2
        return 0
    for m in EMBEDDED.values():
        state = "" if m.path.exists() else "  (missing)"
        print(f"{m.name}\t{m.path}{state}\n\tlabels: {', '.join(m.labels)} ({m.labels_file})\n\t{m.description}")
    return 0


def cmd_scene(args: argparse.Namespace) -> int:
    from pyinfer.scene.video import write_scene

    t0 = time.perf_counter()
    video, truth = write_scene(
        args.out,
        frames=args.frames,
        seed=args.seed,
        width=args.width,
        height=args.height,
        rotated=args.rotated,
        marked=args.marked,
    )
    print(
        f"wrote {video} and {truth}: {args.frames} frames {args.width}x{args.height}, seed {args.seed}"
        f"{', rotated' if args.rotated else ''}{', marked' if args.marked else ''} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from pyinfer.detect import LEFT_RUNNING

    before = len(LEFT_RUNNING)
    code = _detect(args)
    if len(LEFT_RUNNING) > before:  # an element hung while stopping: tearing it down at exit could hang too
        print("pyinfer detect: exiting without waiting for it", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _detect(args: argparse.Namespace) -> int:
    from pyinfer.detect import DetectOptions, run_detect
    from pyinfer.errors import ConfigError

    try:
        if args.truth and not args.json:
            raise ConfigError("--truth needs --json: the detections are evaluated from that file")
        if args.truth and not Path(args.truth).is_file():
            raise ConfigError(f"--truth {args.truth}: no such file")
        if args.truth and len(args.input) > 1:
            raise ConfigError("--truth takes one input: evaluate each input's JSON with pyinfer eval")
        opts = DetectOptions(
            input=args.input[0],
            inputs=tuple(args.input),
            model_engine=args.model_engine,
            labels_file=args.labels_file,
            json_out=args.json,
            video_out=args.video,
            device=args.device,
            backend=args.backend,
            precision=args.precision,
            allow_pickle=args.allow_pickle,
            batch_size=args.batch_size,
            confidence_threshold=args.confidence_threshold,
            nms_iou_threshold=args.nms_iou_threshold,
            decoder=args.decoder,
            postprocess=args.postprocess,
            interval=args.interval,
            input_width=args.input_width,
            input_height=args.input_height,
            progress=not args.quiet,
            publish=args.publish,
            track=args.track,
            secondary=args.secondary,
            secondary_reinfer_interval=args.secondary_reinfer_interval,
        )
    except ConfigError as exc:
        print(f"pyinfer detect: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_detect(opts)
    except RuntimeError as exc:
        print(f"pyinfer detect: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the second Ctrl-C
        print("pyinfer detect: stopped; the outputs may be incomplete", file=sys.stderr)
        return 130
    print(result.summary())
    if result.problem:
        print(f"pyinfer detect: {result.problem}", file=sys.stderr)
        return 1
    if result.interrupted:
        return 130  # as a shell reports a command ended by SIGINT; the outputs are complete up to that frame
    if args.truth and args.json:
        try:
            print_evaluation("pyinfer detect", args.json, args.truth)
        except ConfigError as exc:
            print(f"pyinfer detect: {exc}", file=sys.stderr)
            return 2
    return 0


def print_evaluation(
    prog: str, pred_path: str, truth_path: str, *, iou_threshold: float = 0.5, rotated: bool = False
) -> dict[str, Any]:
    """Print precision/recall, and MOTA/IDF1/ID switches when the predictions carry track ids (pytracker), as
    ``pyinfer eval`` and ``pyinfer detect --truth`` do; warn on stderr when the two files do not look like the
    same video. Returns the figures as a dict. Raises ConfigError as :func:`pyinfer.evaluate.evaluate_files`."""
    from pyinfer.evaluate import evaluate_attribute_files, evaluate_files
    from pyinfer.track.metrics import evaluate_tracking_files

    result = evaluate_files(pred_path, truth_path, iou_threshold=iou_threshold, rotated=rotated)
    tracking = evaluate_tracking_files(pred_path, truth_path, iou_threshold=iou_threshold)
    print(result)
    data = result.as_dict()
    if tracking is not None:
        print(tracking)
        data["tracking"] = tracking.as_dict()
    attribute = None if rotated else evaluate_attribute_files(pred_path, truth_path, iou_threshold=iou_threshold)
    if attribute is not None:
        print(attribute)
        data["secondary"] = attribute.as_dict()
    for warning in result.warnings:
        print(f"{prog}: warning: {warning}", file=sys.stderr)
    return data


def cmd_eval(args: argparse.Namespace) -> int:
    from pyinfer.errors import ConfigError

    try:
        data = print_evaluation("pyinfer eval", args.json, args.truth, iou_threshold=args.iou, rotated=args.rotated)
        from pyinfer.evaluate import evaluate_masks, evaluate_vertices
        from pyinfer.jsonl import read_jsonl

        if args.masks_seed is not None:
            masks = evaluate_masks(read_jsonl(args.json), read_jsonl(args.truth), args.masks_seed,
                                   iou_threshold=args.iou)  # fmt: skip
            print(masks)
            data["masks"] = masks.as_dict()
        if args.vertices:
            verts = evaluate_vertices(read_jsonl(args.json), read_jsonl(args.truth), iou_threshold=args.iou)
            print(verts)
            data["vertices"] = verts.as_dict()
    except ConfigError as exc:
        print(f"pyinfer eval: {exc}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps(data, indent=2) + "\n")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from pyinfer.doctor import deepstream_selftest, report

    for line in report():
        print(line)
    if args.deepstream:
        ran, ok, text = deepstream_selftest()
        print(f"DeepStream self-test: {text}")
        return 0 if ok or not ran else 1
    return 0


def _ranged(kind: type, name: str):
    """An argparse type: ``kind`` within ``pyinfer.detect.RANGES[name]`` (the element property's range)."""
    from pyinfer.detect import RANGES

    low, high = RANGES[name]

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not low <= value <= high:  # NaN fails both
            raise argparse.ArgumentTypeError(f"{text} is out of range: {low:g} to {high:g}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _device(text: str) -> str:
    dev = text.strip().lower()
    if dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()):
        return dev
    raise argparse.ArgumentTypeError(f"{text!r} is not one of auto, cpu, cuda, cuda:N")


def build_parser() -> argparse.ArgumentParser:
    from pyinfer.backends import BACKENDS
    from pyinfer.backends.base import PRECISIONS
    from pyinfer.decoders import DECODER_NAMES
    from pyinfer.zoo import EMBEDDED

    p = argparse.ArgumentParser(prog="pyinfer", description="Python inference elements for GStreamer.")
    p.add_argument("--version", action="version", version=f"pyinfer {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("env", help="print the exports that make gst-inspect-1.0/gst-launch-1.0 find the elements")
    s.set_defaults(func=cmd_env)

    s = sub.add_parser("models", help="list the embedded models")
    s.add_argument("--path", metavar="NAME", help="print only the file path of model NAME")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("scene", help="render a synthetic scene: DIR/video.mp4 and DIR/truth.jsonl")
    s.add_argument("--frames", type=int, default=300)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--width", type=int, default=1280)
    s.add_argument("--height", type=int, default=720)
    s.add_argument("--out", required=True, metavar="DIR")
    variant = s.add_mutually_exclusive_group()
    variant.add_argument(
        "--rotated", action="store_true", help="spinning shapes; the truth adds rotated boxes (cxcywhr)"
    )
    variant.add_argument(
        "--marked", action="store_true", help="a dot, a bar or nothing on every object; the truth adds its mark"
    )
    s.set_defaults(func=cmd_scene)

    s = sub.add_parser(
        "detect",
        help="run videos, streams or images through pyinfer; write JSON lines and/or annotated MP4s",
        description="Run one or more inputs through pyinfer (and pytracker, pymsgconv/pymsgbroker); write JSON "
        "lines as frames come and/or annotated MP4s. Several inputs share one model and one batch (batch-group), "
        "each with its own tracker, messages (source-id N, the input's number from 0) and outputs. Ctrl-C ends "
        "the streams cleanly: the outputs hold every frame before it (exit status 130). Options named like "
        "pyinfer's properties set them (gst-inspect-1.0 pyinfer).",
    )
    s.add_argument("input", nargs="+",
                   help="a file GStreamer can decode, a URI (file://, rtsp://, http(s)://), a directory of images "
                   "(jpg, png) or a glob of images ('frames/*.png'); several run together")  # fmt: skip
    s.add_argument("--model-engine", default="", metavar="MODEL",
                   help="a model file, package.module:callable, /path/file.py:callable, or an embedded model's name "
                   f"(pyinfer models: {', '.join(EMBEDDED)}); default: the embedded shapes detector")  # fmt: skip
    s.add_argument("--labels-file", default="", help="class names, one per line (one per class)")
    s.add_argument("--json", metavar="OUT.jsonl",
                   help="detections, one JSON line per frame, written as frames come. Several inputs: a pattern "
                   "with {stream} (the input's number) or {name} (its file stem), or a directory (DIR/N-NAME.jsonl): "
                   "one file per input; a plain path: one file, each record with \"stream\"")  # fmt: skip
    s.add_argument("--video", metavar="OUT.mp4",
                   help="annotated H.264 MP4 (odd sizes padded to even); several inputs: a pattern with {stream} "
                   "or {name}, or a directory (one MP4 per input)")  # fmt: skip
    s.add_argument("--truth", metavar="TRUTH.jsonl", help="also evaluate against this ground truth")
    s.add_argument("--device", default="auto", type=_device, help="auto, cpu, cuda or cuda:N (default: auto)")
    s.add_argument("--backend", default="auto", choices=BACKENDS, help="default: auto, from the model's extension")
    s.add_argument("--precision", default="fp32", choices=PRECISIONS)
    s.add_argument("--allow-pickle", action="store_true",
                   help="allow model files that unpickle Python objects (they can run any code)")  # fmt: skip
    s.add_argument("--decoder", default="auto", choices=DECODER_NAMES, help="output decoder (default: auto)")
    s.add_argument("--postprocess", default="", metavar="MODULE:FUNCTION",
                   help="custom post-processing hook (implies --decoder custom under auto)")  # fmt: skip
    s.add_argument("--input-width", type=_ranged(int, "input_width"), default=0, metavar="W",
                   help="model input width (with --input-height); default: from the model's metadata")  # fmt: skip
    s.add_argument("--input-height", type=_ranged(int, "input_height"), default=0, metavar="H")
    s.add_argument("--batch-size", type=_ranged(int, "batch_size"), default=1, metavar="N", help="1 to 1024")
    s.add_argument("--interval", type=_ranged(int, "interval"), default=0, metavar="N",
                   help="frames skipped between inferences (0: every frame)")  # fmt: skip
    s.add_argument("--confidence-threshold", type=_ranged(float, "confidence_threshold"),
                   default=DEFAULT_PARAMS.conf_threshold, metavar="T",
                   help=f"0 to 1 (default: {DEFAULT_PARAMS.conf_threshold})")  # fmt: skip
    s.add_argument("--nms-iou-threshold", type=_ranged(float, "nms_iou_threshold"),
                   default=DEFAULT_PARAMS.iou_threshold, metavar="T",
                   help=f"0 to 1 (default: {DEFAULT_PARAMS.iou_threshold})")  # fmt: skip
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--publish", metavar="TARGET", help="also publish one JSON message per frame (docs/messages.md): "
                   "a path or file:///path (JSON lines), mqtt://host:port/topic, redis://host:port/stream, "
                   "kafka://host:port/topic")  # fmt: skip
    s.add_argument("--track", action="store_true", help="track objects (pytracker): track ids in JSON and messages")
    s.add_argument("--secondary", default="", metavar="MODEL",
                   help="a classifier run on each object's crop (pyinfer process-mode=secondary, after the tracker): "
                   "a model file, module:callable or an embedded classifier's name (marks); its best class per "
                   "object goes to the JSON, the messages and the video's labels")  # fmt: skip
    s.add_argument("--secondary-reinfer-interval", type=_ranged(int, "secondary_reinfer_interval"), default=0,
                   metavar="N", help="with --track: a tracked object keeps its secondary result for N frames "
                   "(default 0: every frame)")  # fmt: skip
    s.set_defaults(func=cmd_detect)

    s = sub.add_parser(
        "eval",
        help="precision, recall and mean IoU of detections against ground truth; MOTA, IDF1 and ID "
        "switches too when the detections carry track ids",
    )
    s.add_argument("--json", required=True, metavar="OUT.jsonl")
    s.add_argument("--truth", required=True, metavar="TRUTH.jsonl")
    s.add_argument("--iou", type=float, default=0.5)
    s.add_argument("--rotated", action="store_true", help="match by rotated-box IoU (objects need cxcywhr)")
    s.add_argument("--masks-seed", type=int, default=None, metavar="SEED",
                   help="also score the detections' masks against the exact masks of pyinfer scene --seed SEED "
                   "(the scene the truth file came from)")  # fmt: skip
    s.add_argument("--vertices", action="store_true",
                   help="also score child objects' keypoints (--secondary vertices) against the scene shapes' "
                   "vertices")  # fmt: skip
    s.add_argument("--out", metavar="RESULT.json", help="also write the figures as JSON")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("doctor", help="report what pyinfer can use on this machine")
    s.add_argument("--deepstream", action="store_true",
                   help="also run a short DeepStream self-test pipeline (nvstreammux, pyinfer, nvtracker)")  # fmt: skip
    s.set_defaults(func=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (start-up): no traceback
        print("pyinfer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
