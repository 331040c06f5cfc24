"""``python -m pyinfer.text.demo VIDEO --truth truth.jsonl --out DIR``: the embedded ``counter`` model through pyvlm.

Decodes a ``pyinfer scene`` video, runs ``pyvlm text-model=pyinfer.text.counter:load`` beside it, and writes
``DIR/messages.jsonl`` (pymsgconv's messages, with their ``texts``), ``DIR/texts.jsonl`` (one JSON line per frame,
``pyinfer.jsonl.frame_record``) and ``DIR/annotated.mp4`` (pyosd's captions); then prints how many of the model's
answers equal the caption of the truth counts of the frame they name.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video")
    p.add_argument("--truth", required=True, help="the scene's truth.jsonl")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--prompt", default="")
    args = p.parse_args(argv)

    import pyinfer

    pyinfer.register()  # initialises GStreamer: the element modules below build caps at import
    from pyinfer._gi import Gst, structure
    from pyinfer.elements.msgconv import read_payloads
    from pyinfer.jsonl import JsonLinesWriter, frame_record, read_jsonl
    from pyinfer.meta import read_detections
    from pyinfer.meta.text import read_texts
    from pyinfer.scene.generator import CLASSES
    from pyinfer.text.counter import MAX_COUNT, caption

    args.out.mkdir(parents=True, exist_ok=True)
    truth = {}
    for rec in read_jsonl(args.truth):
        counts = np.bincount([o["class_id"] for o in rec["objects"]], minlength=len(CLASSES))[: len(CLASSES)]
        truth[rec["frame"]] = caption(np.minimum(counts, MAX_COUNT).tolist())
    prompt = args.prompt.replace('"', "")
    pipeline = Gst.parse_launch(
        f'filesrc location="{args.video}" ! decodebin ! videoconvert ! video/x-raw,format=RGB ! '
        f'pyvlm text-model=pyinfer.text.counter:load prompt="{prompt}" ! pymsgconv frame-interval=1 ! '
        # tune=zerolatency: x264enc holds no frames, so the appsink branch's queue (10 MB: four 720p frames) never
        # fills while the encoder waits for more (preroll deadlock at 1280x720)
        "tee name=t ! queue ! appsink name=sink sync=false t. ! queue ! pyosd ! videoconvert ! "
        "x264enc speed-preset=veryfast tune=zerolatency ! h264parse ! mp4mux ! "
        f'filesink location="{args.out / "annotated.mp4"}"'
    )
    answers: dict[int, str] = {}
    messages = (args.out / "messages.jsonl").open("w", encoding="utf-8")
    lines = JsonLinesWriter(args.out / "texts.jsonl")
    frame = [0]

    def on_sample(sink):
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer()
        texts = read_texts(buf)
        for t in texts:
            answers[t.source_frame] = t.text
        payloads = read_payloads(buf)
        for text in payloads.texts if payloads is not None else ():
            messages.write(text + "\n")
        pts = None if buf.pts == Gst.CLOCK_TIME_NONE else int(buf.pts)
        with structure(sample.get_caps()) as s:
            width, height = s.get_int("width")[1], s.get_int("height")[1]
        lines.write(frame_record(frame[0], pts, width, height, read_detections(buf), texts=texts))
        frame[0] += 1
        return Gst.FlowReturn.OK

    sink = pipeline.get_by_name("sink")
    sink.set_property("emit-signals", True)
    sink.connect("new-sample", on_sample)
    pipeline.set_state(Gst.State.PLAYING)
    msg = pipeline.get_bus().timed_pop_filtered(Gst.CLOCK_TIME_NONE, Gst.MessageType.EOS | Gst.MessageType.ERROR)
    pipeline.set_state(Gst.State.NULL)
    messages.close()
    lines.close()
    if msg.type == Gst.MessageType.ERROR:
        err, debug = msg.parse_error()
        print(f"error: {err.message}\n{debug}")
        return 1
    right = sum(answers[k] == truth.get(k) for k in answers)
    print(f"pyvlm counter: {len(answers)} answers on {frame[0]} frames; {right} ({right / max(1, len(answers)):.1%}) "
          f"equal the truth caption of the frame they name; wrote {args.out}/messages.jsonl, texts.jsonl, "
          "annotated.mp4")  # fmt: skip
    example = next(iter(sorted(answers.items())), None)
    if example is not None:
        print(json.dumps({"source_frame": example[0], "answer": example[1], "truth": truth.get(example[0])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
