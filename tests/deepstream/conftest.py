"""DeepStream tests on the CPU: the contract fakes of tests/fakes stand in for pyservicemaker and pyds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FAKES = str(Path(__file__).resolve().parents[1] / "fakes")
if FAKES not in sys.path:
    sys.path.insert(0, FAKES)

import dsmux  # noqa: E402
import nvds  # noqa: E402

dsmux.register()


@pytest.fixture(autouse=True)
def fresh_fakes():
    nvds.reset()
    yield
    nvds.reset()
