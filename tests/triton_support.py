"""A real Triton Inference Server for tests and benchmarks: the ``tritonserver`` binary of the nvidia-pytriton
wheel (CPU only, python backend), on 127.0.0.1 with free ports, serving the embedded shapes detector through a
python-backend ``model.py`` that runs the TorchScript file with torch."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

SHAPES_PARAMS = {"imgsz": "[384, 384]", "names": "{0: 'circle', 1: 'square', 2: 'triangle'}", "task": "detect"}

MODEL_PY = '''
"""The shapes detector (TorchScript), for pyinfer's tests and bench/triton_remote.py."""
import json
import os

import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.config = config
        self.uint8 = config["input"][0]["data_type"] == "TYPE_UINT8"
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        torch.set_num_threads(int(params.get("threads") or 1))
        self.device = torch.device(params.get("device") or "cpu")
        self.delay = float(params.get("delay_s") or 0)
        self.fail = params.get("fail", "")
        self.delay_after = int(params.get("delay_after") or 0)
        self.calls = 0
        self.net = torch.jit.load(os.environ.get("PYINFER_SHAPES", "{path}"), map_location=self.device).eval()
        self.log = os.environ.get("PYINFER_TRITON_BATCH_LOG")

    def execute(self, requests):
        import time

        self.calls += 1
        if self.delay and self.calls > self.delay_after:
            time.sleep(self.delay)
        if self.fail:
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(self.fail)) for _ in requests]
        tensors = [pb_utils.get_input_tensor_by_name(r, "images") for r in requests]
        arrays = [torch.utils.dlpack.from_dlpack(t.to_dlpack()) for t in tensors]  # not as_numpy: see below
        sizes = [a.shape[0] for a in arrays]
        x = torch.cat(arrays).to(self.device)
        if self.uint8:
            x = x.float() / 255
        if self.log:
            with open(self.log, "a") as f:
                ids = [r.request_id() for r in requests]
                f.write(json.dumps({{"model": self.config["name"], "ids": ids, "rows": int(x.shape[0])}}) + "\\n")
        with torch.inference_mode():
            out = self.net(x).cpu()
        responses, start = [], 0
        # Tensors through DLPack both ways: the stub's NumPy conversions gave empty outputs and wrong inputs here
        # (NumPy 2.4 in this venv; the stub was built against an older one).
        for n in sizes:
            part = out[start : start + n].contiguous()
            tensor = pb_utils.Tensor.from_dlpack("output0", torch.utils.dlpack.to_dlpack(part))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
            start += n
        return responses
'''


def config_pbtxt(name: str, *, dtype: str = "TYPE_FP32", max_batch: int = 8, delay_s: float = 0.0,
                 queue_delay_us: int = 2000, fail: str = "", delay_after: int = 0, threads: int = 1,
                 device: str = "cpu") -> str:  # fmt: skip
    """A python-backend model's config: the shapes detector's input/output, dynamic batching, and the test knobs
    (``delay_s`` before each execute after the first ``delay_after``, ``fail``: answer every request with this
    error); ``threads``: torch's intra-op threads in the model, ``device``: where it runs (cpu, cuda)."""
    params = dict(SHAPES_PARAMS, delay_s=str(delay_s), fail=fail, delay_after=str(delay_after),
                  threads=str(threads), device=device)  # fmt: skip
    lines = "\n".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items())
    return textwrap.dedent(f"""\
        name: "{name}"
        backend: "python"
        max_batch_size: {max_batch}
        input [ {{ name: "images" data_type: {dtype} dims: [ 3, 384, 384 ] }} ]
        output [ {{ name: "output0" data_type: TYPE_FP32 dims: [ 7, -1 ] }} ]
        dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}
        instance_group [ {{ kind: KIND_CPU count: 1 }} ]
        """) + lines + "\n"  # fmt: skip


def write_repository(root: Path, shapes: Path, models: dict[str, dict]) -> Path:
    """A model repository under ``root``: one python-backend model per entry (name -> config_pbtxt options)."""
    for name, options in models.items():
        d = root / name
        (d / "1").mkdir(parents=True, exist_ok=True)
        (d / "config.pbtxt").write_text(config_pbtxt(name, **options))
        (d / "1" / "model.py").write_text(MODEL_PY.replace("{path}", str(shapes)).replace("{{", "{").replace("}}", "}"))
    return root


def tritonserver_dir() -> Path:
    """The tritonserver installation of the nvidia-pytriton wheel; FileNotFoundError naming the fix if missing."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nvidia-pytriton wheel is not installed: make setup (or pip install --no-deps "
                                "nvidia-pytriton==0.7.0)")  # fmt: skip
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise FileNotFoundError(f"no tritonserver binary under {root}")
    return root


def backend_dir(work: Path) -> Path:
    """A backend directory whose python backend has this Python's stub (the wheel keeps one per version)."""
    src = tritonserver_dir()
    dst = work / "backends" / "python"
    dst.mkdir(parents=True, exist_ok=True)
    for f in (src / "backends" / "python").iterdir():
        if f.is_file() and not (dst / f.name).exists():
            (dst / f.name).symlink_to(f)
    stub = src / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / (
        "triton_python_backend_stub")  # fmt: skip
    if not (dst / stub.name).exists():
        shutil.copy2(stub, dst / stub.name)  # the backend looks beside itself; a symlink would resolve elsewhere
    return work / "backends"


def stub_libpython(work: Path) -> Path:
    """A directory whose copy of the wheel's bundled libpython (renamed, e.g. libpython3-419a3a08.13.so.1.0, and
    older than Debian's) is this interpreter's own: the stub imports the standard library's extension modules
    (_ctypes), which need the libpython they were built with (Debian 13's 3.13.5 _ctypes needs
    _PyErr_SetLocaleString, which the wheel's 3.13 lacks). Put first on the stub's LD_LIBRARY_PATH."""
    import sysconfig

    libs = tritonserver_dir().parent.parent / "nvidia_pytriton.libs"
    out = work / "stub-libs"
    out.mkdir(parents=True, exist_ok=True)
    own = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")
    if own.exists():
        for bundled in libs.glob(f"libpython3-*.{sys.version_info.minor}.so*"):
            link = out / bundled.name
            if not link.exists():
                link.symlink_to(own)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """One tritonserver process on 127.0.0.1; ``stop``/``start`` keep the ports (a restart of the same server)."""

    def __init__(self, repository: Path, work: Path, env: dict[str, str] | None = None):
        self.repository = repository
        self.work = work
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.env = env or {}
        self.log_path = work / "tritonserver.log"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def url(self, model: str, protocol: str = "grpc", **options: str) -> str:
        port = self.grpc_port if protocol == "grpc" else self.http_port
        scheme = "triton" if protocol == "grpc" else "http"
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"{scheme}://127.0.0.1:{port}/{model}" + (f"?{query}" if query else "")

    def start(self, timeout_s: float = 60.0) -> None:
        root = tritonserver_dir()
        env = dict(os.environ, **self.env)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # the stub runs this venv's python
        # the stub copied out of the wheel looks for the wheel's bundled libraries (libcudart...) on the path
        libs = f"{stub_libpython(self.work)}:{root.parent.parent / 'nvidia_pytriton.libs'}"
        env["LD_LIBRARY_PATH"] = f"{libs}:{env.get('LD_LIBRARY_PATH', '')}"
        cmd = [
            str(root / "bin" / "tritonserver"), f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir(self.work)}", "--grpc-address=127.0.0.1", "--http-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}", f"--http-port={self.http_port}", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=false", "--allow-gpu-metrics=false", "--log-verbose=0", "--exit-timeout-secs=5",
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - the server's lifetime
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited ({self.proc.returncode}): {self.tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.http}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"tritonserver not ready after {timeout_s} s: {self.tail()}")

    def stop(self, *, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)  # the server and its model stubs
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def tail(self, n: int = 3000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
            errors = "\n".join(line for line in text.splitlines() if line.startswith(("E", "W")))
            return (errors + "\n...\n" if errors else "") + text[-n:]
        except OSError:
            return ""
