"""Labels files: one class name per line, as nvinfer's ``labelfile-path`` for detectors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pyinfer.errors import ConfigError

MAX_LABEL_BYTES = 127  # DeepStream's obj_label is char[128]; keep every sink able to carry the name
#: The largest labels file read: 16 MiB is over 100,000 names of the longest kind.
MAX_FILE_BYTES = 16 << 20

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Read class names, one per line; surrounding whitespace and blank lines are dropped.

    Raises:
        ConfigError: the file is missing (``missing=True``), not a regular file (a FIFO, a device, a
            directory), larger than :data:`MAX_FILE_BYTES`, unreadable, not UTF-8, empty, or has a name
            longer than 127 bytes.
    """
    text = _read_text(path)
    # Only newlines separate names (str.splitlines would also split on form feeds, U+2028, ...).
    names = tuple(line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip())
    if not names:
        raise ConfigError(f"labels file {path} has no names")
    for i, name in enumerate(names):
        if "\x00" in name:
            raise ConfigError(f"labels file {path}: name {i} contains a NUL character")
        if len(name.encode()) > MAX_LABEL_BYTES:
            raise ConfigError(f"labels file {path}: name {i} is longer than {MAX_LABEL_BYTES} bytes")
    return names


def check_label_count(labels: tuple[str, ...], num_classes: int | None, path: str | Path) -> None:
    """ConfigError unless the labels file at ``path`` has one name per class of the model.

    Too few names leave classes unnamed; too many mean the file belongs to another model (an 80-class COCO
    file for a 3-class model), or to another decoder reading of this one's outputs. Either way every label
    would be a guess, so both directions are refused, naming both counts.

    Args:
        labels: the names read from ``path``.
        num_classes: the class count the decoder read from the model's outputs; None (end-to-end rows, a
            custom hook: the decoder cannot tell) accepts any count.
        path: the labels file, for the message.
    """
    if num_classes is None or len(labels) == num_classes:
        return
    names = "name" if len(labels) == 1 else "names"
    classes = "class" if num_classes == 1 else "classes"
    raise ConfigError(
        f"labels file {path} has {len(labels)} {names} but the model has {num_classes} {classes}: "
        f"give one name per class, in class order"
    )


def _read_text(path: str | Path) -> str:
    """The file's text, read only if it is a regular file of at most :data:`MAX_FILE_BYTES`.

    A FIFO would block ``open`` until some writer came (and pyinfer's start with it), a device could be
    read without end: neither is opened for reading.
    """
    try:
        # Checked before opening: opening a device can have effects of its own (a tape rewinds, a tty...).
        _check_regular(path, os.stat(path))
        # O_NONBLOCK: should a FIFO have replaced the file since, opening it still returns at once.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise ConfigError(f"labels file {path} does not exist", missing=True) from None
    except OSError as exc:
        raise ConfigError(f"labels file {path} cannot be read: {exc.strerror or exc}") from exc
    try:
        _check_regular(path, os.fstat(fd))  # what was opened, not what the path named a moment ago
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)  # the file may have grown since fstat
    except OSError as exc:
        raise ConfigError(f"labels file {path} cannot be read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"labels file {path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"labels file {path} is not UTF-8 text (byte {exc.start})") from exc


def _check_regular(path: str | Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "a special file")
        raise ConfigError(f"labels file {path} cannot be read: it is {kind}, not a regular file")
    if st.st_size > MAX_FILE_BYTES:
        raise ConfigError(f"labels file {path} is larger than {MAX_FILE_BYTES} bytes")
