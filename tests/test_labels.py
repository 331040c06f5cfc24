"""Labels files: one class name per line."""

from __future__ import annotations

import pytest

from pyinfer.errors import ConfigError
from pyinfer.labels import MAX_LABEL_BYTES, read_labels


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
