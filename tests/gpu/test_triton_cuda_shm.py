"""backend=triton with CUDA shared memory (issue #17), on a machine with an NVIDIA GPU and the nvidia-pytriton
wheel's tritonserver (tests/triton_support.py; on the GPU machine it is unpacked from a carried bundle).

The element on the GPU letterboxes there; with ``shm=cuda`` the tensor is copied device to device into regions
the server opened through CUDA IPC (registered with ``register_cuda_shared_memory``), never through host memory.
The server's python-backend model runs the embedded detector on the GPU. Its outputs must equal the local
backend's, the regions must be the ones the server lists, and ``shm=auto`` must pick CUDA shared memory here.
CI has no GPU: skipped there, saying why. It needs no GStreamer (``pytest --noconftest`` works).
"""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)
try:
    from triton_support import TritonServer, tritonserver_dir, write_repository

    tritonserver_dir()
except (ImportError, FileNotFoundError) as exc:
    pytest.skip(f"needs the nvidia-pytriton tritonserver: {exc}", allow_module_level=True)

from pyinfer.backends import load_model
from pyinfer.zoo import get_model

# No GStreamer here (the fixtures of tests/conftest.py are not used): the GPU machine's carry limit leaves room for
# the tritonserver bundle or GStreamer's, so this runs as ``pytest --noconftest tests/gpu/test_triton_cuda_shm.py``.


@pytest.fixture(scope="module")
def embedded_model():
    return get_model()


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedded_model):
    work = tmp_path_factory.mktemp("triton-gpu")
    repo = write_repository(work / "repo", embedded_model.path, {"shapes": {"device": "cuda", "threads": 4}})
    srv = TritonServer(repo, work)
    srv.start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("batch", [1, 4])
def test_cuda_shared_memory_gives_the_local_outputs(server, embedded_model, batch):
    x = torch.rand(batch, 3, 384, 384, generator=torch.Generator().manual_seed(batch)).cuda()
    local = load_model(str(embedded_model.path), "cuda")
    model = load_model(server.url("shapes", shm="cuda"), "cuda", max_batch=4)
    assert model.metadata["triton"]["shm"] == "cuda"
    assert model.remote.cuda is not None and not model.remote.handles
    for _ in range(3):  # the regions are reused request after request
        got = model.forward(x)[0]
        torch.testing.assert_close(got.float().cpu(), local.forward(x)[0].float().cpu(), atol=2e-3, rtol=1e-3)
    import tritonclient.grpc as grpcclient

    status = grpcclient.InferenceServerClient(server.grpc).get_cuda_shared_memory_status(as_json=True)
    assert set(model.remote.cuda.handles) <= set(status.get("regions", {}))


def test_auto_picks_cuda_shared_memory_for_an_element_on_the_gpu(server):
    model = load_model(server.url("shapes"), "cuda", max_batch=2)
    assert model.metadata["triton"]["shm"] == "cuda"
