"""Reading the model's stride from its metadata (the input-size check at start)."""

from __future__ import annotations

import pytest

from pyinfer.backends.metadata import stride_from_config


@pytest.mark.parametrize(
    ("stride", "expected"),
    [
        (32, 32),
        ([8, 16, 32], 32),
        (32.0, 32),
        ((8, 16, 32, 64), 64),
        (None, None),
        ("32", None),
        (True, None),
        (1, None),
        (32.5, None),
        (float("inf"), None),
        ([8, "x"], None),
        ([], None),
    ],
)
def test_stride_from_config(stride, expected):
    cfg = {} if stride is None else {"stride": stride}
    assert stride_from_config(cfg) == expected
