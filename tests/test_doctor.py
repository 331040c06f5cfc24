"""``pyinfer doctor``: the report, DeepStream features by hasattr, and the self-test's "not run" here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pyinfer import doctor

FAKES = Path(__file__).resolve().parent / "fakes"


def _doctor(*args: str, fakes: bool) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if fakes:
        env["PYTHONPATH"] = f"{FAKES}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run([sys.executable, "-m", "pyinfer.cli", "doctor", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)  # fmt: skip


def test_doctor_reports_versions_loader_and_missing_deepstream():
    out = _doctor(fakes=False)
    assert out.returncode == 0, out.stderr
    assert "GStreamer 1." in out.stdout
    assert "gst-python plugin loader: present" in out.stdout
    assert "pyservicemaker: absent" in out.stdout and "pyds: absent" in out.stdout
    assert "pyservicemaker.Buffer.extract (zero-copy frames): no" in out.stdout
    assert "element nvstreammux: absent" in out.stdout
    assert "native metadata helper: in use (" in out.stdout and "native tracker core: in use (" in out.stdout


def test_native_helper_lines_say_why_a_helper_is_not_in_use(tmp_path, monkeypatch):
    monkeypatch.delenv("PYINFER_NO_NATIVE", raising=False)
    missing = tmp_path / "track_native.cpython-311-x86_64-linux-gnu.so"
    assert doctor._native_state(False, missing, "NumPy tracker").startswith("not built (NumPy tracker path;")
    missing.write_bytes(b"")
    assert "did not load or failed its ABI check" in doctor._native_state(False, missing, "NumPy tracker")
    assert doctor._native_state(True, missing, "NumPy tracker") == f"in use ({missing})"
    monkeypatch.setenv("PYINFER_NO_NATIVE", "1")
    assert doctor._native_state(False, missing, "NumPy tracker").startswith("not in use: PYINFER_NO_NATIVE=1")


def test_doctor_detects_binding_features_by_attribute():
    out = _doctor(fakes=True)
    assert out.returncode == 0, out.stderr
    assert "pyservicemaker: available" in out.stdout
    assert "pyservicemaker.Buffer.extract (zero-copy frames): yes" in out.stdout
    assert "pyds nvds_acquire_meta_lock: yes" in out.stdout


def test_deepstream_self_test_says_not_run_and_why_without_deepstream():
    out = _doctor("--deepstream", fakes=True)
    assert out.returncode == 0, out.stderr
    assert "DeepStream self-test: not run: DeepStream elements absent (nvstreammux" in out.stdout


class _Plugin:
    def __init__(self, filename: str) -> None:
        self.filename = filename

    def get_filename(self) -> str:
        return self.filename


class _Registry:
    """What loader_state reads from a Gst.Registry: the loader by name, and every scanned plugin file."""

    def __init__(self, loaded: bool, files: list[str]) -> None:
        self.loaded, self.files = loaded, files

    def find_plugin(self, name: str):
        return _Plugin("libgstpython.so") if self.loaded and name == "python" else None

    def get_plugin_list(self) -> list[_Plugin]:
        return [_Plugin(f) for f in self.files]


def _fake_loader(path: Path, wanted: bytes) -> Path:
    # The strings as they sit in the real loaders: the linked soname, then the file opened at run time.
    path.write_bytes(b"\x7fELF\0libpython3.13.so.1.0\0loading libpython by name: %s\0" + wanted + b"\0tail")
    return path


def test_libpython_wanted_reads_the_file_the_loader_opens_not_its_soname(tmp_path):
    by_name = _fake_loader(tmp_path / "a.so", b"libpython3.13.so")
    by_path = _fake_loader(tmp_path / "b.so", b"/usr/lib/python3.11/config-3.11-x86_64-linux-gnu/libpython3.11.so")
    assert doctor.libpython_wanted(by_name) == ["libpython3.13.so"]
    assert doctor.libpython_wanted(by_path) == ["/usr/lib/python3.11/config-3.11-x86_64-linux-gnu/libpython3.11.so"]


def test_loader_state_names_the_missing_libpython_and_the_package(tmp_path):
    loader = _fake_loader(tmp_path / "libgstpython.so", str(tmp_path / "gone" / "libpython3.13.so").encode())
    state = doctor.loader_state(_Registry(loaded=False, files=["/x/libgstcoreelements.so", str(loader)]))
    assert state.startswith(f"FAILED to load {loader}: it opens {tmp_path}/gone/libpython3.13.so, which is not")
    assert "apt install libpython3-dev" in state and "registry" in state


def test_loader_state_present_missing_or_failed_for_another_reason(tmp_path):
    there = tmp_path / "libpython3.13.so"
    there.write_bytes(b"")
    loader = _fake_loader(tmp_path / "libgstpython.so", str(there).encode())
    assert doctor.loader_state(_Registry(loaded=True, files=[])) == "present"
    assert doctor.loader_state(_Registry(loaded=False, files=[])).startswith("MISSING (apt install gstreamer1.0-")
    state = doctor.loader_state(_Registry(loaded=False, files=[str(loader)]))
    assert state.startswith(f"FAILED to load {loader} (GST_DEBUG=python:6")


def _shell_env(tmp_path, *, python_path: bool) -> dict[str, str]:
    """A user's shell: pyinfer's plugin folder on GST_PLUGIN_PATH, PYINFER_PYTHONPATH only if asked, its own
    registry cache."""
    from pyinfer.cli import plugin_path
    from pyinfer.cli import python_path as loader_path

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYINFER_PYTHONPATH", "GST_PLUGIN_PATH")}
    env["GST_PLUGIN_PATH"] = str(plugin_path())
    env["GST_REGISTRY"] = str(tmp_path / "registry.bin")
    if python_path:
        env["PYINFER_PYTHONPATH"] = os.pathsep.join(loader_path())
    return env


def _doctor_in(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "pyinfer.cli", "doctor"], capture_output=True, text=True, env=env,
                         timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_doctor_names_the_missing_python_path_when_no_scan_finds_the_elements(tmp_path):
    text = _doctor_in(_shell_env(tmp_path, python_path=False))
    line = next(t for t in text.splitlines() if t.startswith("elements in a fresh plugin scan"))
    assert "NOT found: pyinfer" in line and "cannot import pyinfer" in line and 'eval "$(pyinfer env)"' in line


def test_doctor_spots_a_stale_registry_cache_and_says_how_to_clear_it(tmp_path):
    """The trap of issue #18: a scan without the Python path is cached; after `pyinfer env` gst-inspect still
    finds nothing, because GStreamer does not rescan. doctor tells the two apart and names the file."""
    failing = _shell_env(tmp_path, python_path=False)
    assert subprocess.run(["gst-inspect-1.0", "--exists", "pyinfer"], env=failing, capture_output=True,
                          timeout=120, check=False).returncode != 0  # fmt: skip
    fixed = _shell_env(tmp_path, python_path=True)
    still = subprocess.run(["gst-inspect-1.0", "--exists", "pyinfer"], env=fixed, capture_output=True, timeout=120,
                           check=False)  # fmt: skip
    assert still.returncode != 0, "GStreamer rescanned by itself: the stale-cache trap is gone"
    text = _doctor_in(fixed)
    assert "elements in a fresh plugin scan: all found" in text
    registry = fixed["GST_REGISTRY"]
    assert f"elements in the registry cache ({registry}): NOT found: pyinfer" in text
    assert f"rm {registry}" in text
    Path(registry).unlink()  # what doctor says to do
    assert f"elements in the registry cache ({registry}): all found" in _doctor_in(fixed)


def test_doctor_reports_the_broker_clients():
    text = _doctor(fakes=False).stdout
    for label in ("MQTT (paho-mqtt)", "Redis (redis)", "Kafka (confluent-kafka)"):
        assert f"broker client {label}: available" in text  # the test extra installs all three
