"""ultralytics as the reference: offline (checked), its models built from yaml, exports cached per session.

The environment is set at import, before any test here imports ultralytics: offline mode, no auto-install,
no requirement checks, settings in a temporary directory. Every module here also runs with the network
refused and recorded (``no_network``); a module during which anything tried to connect fails at teardown.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile

import pytest

from reference.ultra import OFFLINE_ENV

_CONFIG_DIR = tempfile.mkdtemp(prefix="pyinfer-ultralytics-")
atexit.register(shutil.rmtree, _CONFIG_DIR, ignore_errors=True)
os.environ.update(OFFLINE_ENV)
os.environ["YOLO_CONFIG_DIR"] = _CONFIG_DIR  # settings.json goes here, not to ~/.config
os.environ.setdefault("MPLCONFIGDIR", _CONFIG_DIR)  # ultralytics imports matplotlib, which caches fonts


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Refuse and record every DNS lookup and connection while the module's tests run."""
    attempts: list[str] = []

    def refuse(what: str, *args: object) -> None:
        attempts.append(f"{what}{args!r}")
        raise OSError(f"reference tests run offline: {what} refused")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket, "getaddrinfo", lambda *a, **k: refuse("getaddrinfo", *a[:2]))
    mp.setattr(socket, "create_connection", lambda *a, **k: refuse("create_connection", *a[:1]))
    mp.setattr(socket.socket, "connect", lambda self, addr: refuse("connect", addr))
    mp.setattr(socket.socket, "connect_ex", lambda self, addr: refuse("connect_ex", addr))
    try:
        yield attempts
    finally:
        mp.undo()
    assert not attempts, f"something tried to reach the network: {attempts}"


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    """Where ultralytics writes its exports (it writes next to the working directory for yaml-built models)."""
    return tmp_path_factory.mktemp("ultralytics-exports")
