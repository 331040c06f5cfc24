"""Labels files: one class name per line, as nvinfer's ``labelfile-path`` for detectors."""

from __future__ import annotations

from pathlib import Path

from pyinfer.errors import ConfigError

MAX_LABEL_BYTES = 127  # DeepStream's obj_label is char[128]; keep every sink able to carry the name


def read_labels(path: str | Path) -> tuple[str, ...]:
    """Read class names, one per line; surrounding whitespace and blank lines are dropped.

    Raises:
        ConfigError: the file is missing (``missing=True``), unreadable, not UTF-8, empty, or has a
            name longer than 127 bytes.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"labels file {path} does not exist", missing=True)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"labels file {path} is not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"labels file {path} cannot be read: {exc.strerror or exc}") from exc
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
