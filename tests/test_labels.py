"""Labels files: one class name per line."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from pyinfer.errors import ConfigError
from pyinfer.labels import MAX_LABEL_BYTES, read_labels

MAX_FILE_BYTES = 16 << 20  # pyinfer.labels.MAX_FILE_BYTES (not imported: the old code lacks it)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"person\nbicycle\ncar\n", ("person", "bicycle", "car")),
        (b"person\nbicycle\ncar", ("person", "bicycle", "car")),  # no final newline
        (b"\n\nperson\n\n\nbicycle\n\n", ("person", "bicycle")),  # blank lines dropped
        (b"  person \n\tbicycle\t\n", ("person", "bicycle")),  # surrounding whitespace dropped
        (b"traffic light\nfire hydrant\n", ("traffic light", "fire hydrant")),  # inner spaces kept
        (b"person\r\nbicycle\r\n", ("person", "bicycle")),  # CRLF
        (b"\xef\xbb\xbfperson\nbicycle\n", ("person", "bicycle")),  # UTF-8 BOM
        (b"\xef\xbb\xbfperson\r\n\r\nbicycle", ("person", "bicycle")),
        ("voiture\nvélo\n自転車\n".encode(), ("voiture", "vélo", "自転車")),
        (b"a" * MAX_LABEL_BYTES + b"\n", ("a" * MAX_LABEL_BYTES,)),
    ],
)
def test_names_are_read_one_per_line(tmp_path, content, expected):
    path = tmp_path / "labels.txt"
    path.write_bytes(content)
    assert read_labels(path) == expected
    assert read_labels(str(path)) == expected


def test_a_missing_file_is_a_config_error_marked_missing(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=r"labels file .*nope\.txt does not exist") as info:
        read_labels(path)
    assert info.value.missing is True


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"person\n\xff\xfecar\n", r"is not UTF-8 text \(byte 7\)"),
        (b"caf\xe9\n", r"is not UTF-8 text \(byte 3\)"),  # Latin-1
        (b"", r"has no names"),
        (b"\n \n\t\r\n", r"has no names"),
        (b"\xef\xbb\xbf", r"has no names"),
        (b"ok\n" + b"a" * (MAX_LABEL_BYTES + 1) + b"\n", r"name 1 is longer than 127 bytes"),
        ("é".encode() * 64, r"name 0 is longer than 127 bytes"),  # 64 characters, 128 bytes
        (b"per\x00son\n", r"name 0 contains a NUL character"),
        (b"a\n\nb\nc\x00\n", r"name 2 contains a NUL character"),  # counts names, not lines
    ],
)
def test_bad_files_are_config_errors_naming_the_file(tmp_path, content, match):
    path = tmp_path / "labels.txt"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"labels file .*labels\.txt:? {match}") as info:
        read_labels(path)
    assert info.value.missing is False


def test_a_directory_cannot_be_read(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot be read") as info:
        read_labels(tmp_path)
    assert info.value.missing is False


def _read_in_thread(path, timeout_s: float = 10.0):
    """read_labels(path) on a thread; returns the ConfigError it raised (fails if it raised nothing or hung).

    A FIFO the old code opened blocks in open() until a writer comes: the test then opens the writing end
    itself (so the thread finishes) and fails, rather than hanging the test run."""
    outcome: list[BaseException | tuple[str, ...]] = []

    def target():
        try:
            outcome.append(read_labels(path))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # the reader gets end of file
        thread.join(5.0)
        pytest.fail(f"read_labels({path}) still blocked after {timeout_s} s")
    [result] = outcome
    assert isinstance(result, ConfigError), result
    return result


def test_a_fifo_is_refused_at_once_instead_of_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    err = _read_in_thread(fifo)
    assert time.monotonic() - t0 < 5.0
    assert re.search(r"labels file .*labels\.fifo cannot be read: it is a FIFO, not a regular file", str(err)), err
    assert err.missing is False


_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # the old code read /dev/zero until memory ran out
from pyinfer.errors import ConfigError
from pyinfer.labels import read_labels
try:
    read_labels(sys.argv[1])
except ConfigError as exc:
    print("ConfigError:", exc)
"""


@pytest.mark.parametrize("link", [False, True])
def test_a_device_is_refused_without_reading_it(tmp_path, link):
    path = "/dev/zero"
    if link:  # a symbolic link to a device is the device
        (tmp_path / "labels.txt").symlink_to(path)
        path = str(tmp_path / "labels.txt")
    # In a child with an address-space limit: an unbounded read must fail there, not take this machine's memory.
    proc = subprocess.run([sys.executable, "-c", _CHILD, path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"ConfigError: labels file {path} cannot be read: it is a character device, not a regular file" in (
        proc.stdout
    ), proc.stdout


def test_a_file_over_the_size_bound_is_refused(tmp_path):
    path = tmp_path / "labels.txt"
    with open(path, "wb") as f:
        f.write(b"a\n")
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    err = _read_in_thread(path)
    assert f"is larger than {MAX_FILE_BYTES} bytes" in str(err), err


def test_a_file_at_the_size_bound_is_read(tmp_path):
    path = tmp_path / "labels.txt"
    line = b"x" * 99 + b"\n"
    path.write_bytes(b"a\n" + b" " * (MAX_FILE_BYTES - 2 - len(line)) + line)
    assert path.stat().st_size == MAX_FILE_BYTES
    assert read_labels(path) == ("a", "x" * 99)


def test_pyinfer_with_a_fifo_as_labels_file_posts_an_error_instead_of_blocking_start(fixed_model, tmp_path):
    from pyinfer._gi import Gst
    from support import run

    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)
    pipeline = Gst.parse_launch(
        f"videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=64,height=48 ! "
        f"pyinfer model-engine={fixed_model} labels-file={fifo} ! appsink name=sink"
    )
    results = []
    thread = threading.Thread(target=lambda: results.append(run(pipeline, 60)), daemon=True)
    thread.start()
    thread.join(90)
    if thread.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(30)
        pytest.fail("set_state(PLAYING) blocked on the FIFO")
    [res] = results
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS), res.error.message
    assert "not a regular file" in res.error.message and str(fifo) in res.error.message


# One name per class: too few and too many are both refused (issue #18: 100 names for an 80-class model passed).


@pytest.mark.parametrize(("names", "classes"), [(2, 3), (4, 3), (100, 80), (1, 2), (2, 1)])
def test_a_name_count_other_than_the_class_count_is_a_config_error_naming_both(names, classes):
    from pyinfer.labels import check_label_count  # here, not at the top: older code lacks it

    labels = tuple(f"n{i}" for i in range(names))
    with pytest.raises(ConfigError, match=rf"labels file l\.txt has {names} names? but the model has {classes} class"):
        check_label_count(labels, classes, "l.txt")


@pytest.mark.parametrize(("names", "classes"), [(3, 3), (80, 80), (5, None)])
def test_one_name_per_class_or_an_unknown_class_count_passes(names, classes):
    from pyinfer.labels import check_label_count

    check_label_count(tuple(f"n{i}" for i in range(names)), classes, "l.txt")


@pytest.mark.parametrize(("count", "fragments"), [(2, ("has 2 names", "3 classes")), (4, ("has 4 names", "3 classes"))])
def test_pyinfer_refuses_a_labels_file_with_another_name_count_at_start(fixed_model, tmp_path, count, fragments):
    # The 4-name case needs Engine.build to call labels.check_label_count (see the report of issue #18).
    from pyinfer._gi import Gst
    from support import run

    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"name{i}\n" for i in range(count)))
    res = run(
        Gst.parse_launch(
            f"videotestsrc num-buffers=2 ! video/x-raw,format=RGB,width=64,height=48 ! "
            f"pyinfer model-engine={fixed_model} labels-file={labels} ! appsink name=sink"
        )
    )
    assert res.message == Gst.MessageType.ERROR
    assert res.error.matches(Gst.ResourceError.quark(), Gst.ResourceError.SETTINGS), res.error.message
    assert all(f in res.error.message for f in fragments), res.error.message
    assert str(labels) in res.error.message


def test_the_engine_refuses_100_names_for_the_embedded_3_class_model(tmp_path):
    # Needs Engine.build to call labels.check_label_count (see the report of issue #18).
    from pyinfer.engine import Engine, EngineConfig
    from pyinfer.zoo import get_model

    labels = tmp_path / "coco-plus.txt"
    labels.write_text("".join(f"name{i}\n" for i in range(100)))
    with pytest.raises(ConfigError, match=r"has 100 names but the model has 3 classes"):
        Engine.build(EngineConfig(model=str(get_model().path), device="cpu", labels_file=str(labels)))
