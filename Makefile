# pyinfer: `make demo` runs the main job, `make test` lint and type check, then the test suite (here, then in a
# Debian 13 root file system: .ci/debian13.sh), `make lint` the lint and type check alone, `make test-fast` the
# suite here only. All install what they need first (Debian packages, then a virtualenv in .venv) and skip what
# is already there.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# GStreamer + gst-python from Debian; PyGObject must match Debian's python3, hence --system-site-packages.
# libpython3-dev: outside a Python process the gst-python loader opens the unversioned libpython3.X.so, which only
# that package ships (without it every Python element vanishes). g++: torch.compile builds C++ kernels.
APT_PACKAGES := gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
	gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav python3-gi python3-gst-1.0 \
	gstreamer1.0-python3-plugin-loader gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 python3-venv \
	libpython3-dev gir1.2-gst-rtsp-server-1.0 mosquitto redis-server libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev gcc g++ pkg-config
# A tested torch/torchvision pair from the package index (CUDA builds; they run on the CPU too).
# PIP_FIND_LINKS is cleared so a local CPU-only torch wheel without a matching torchvision is not picked.
TORCH_PACKAGES := torch==2.14.1 torchvision==0.29.2
# The Triton Inference Server for the backend=triton tests (tritonserver 2.51 with the python backend, CPU).
TRITON_SERVER_PACKAGE := nvidia-pytriton==0.7.0
DEMO_DIR := out/demo
DEMO_FRAMES ?= 300

.PHONY: setup demo lint test test-fast test-debian13 bench clean apt
# The C helpers (optional at run time, each ABI-checked when it loads): pyinfer.meta.roi's metadata reader/writer
# (else the ctypes path) and pyinfer.track's tracker core (else NumPy). setup.py builds them as extensions of the
# package; the editable install puts them beside their sources, under Python's extension suffix.
EXT_SUFFIX := $(shell /usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))' 2>/dev/null)
NATIVE_SRC := setup.py src/pyinfer/meta/roi_native.c src/pyinfer/track/track_native.c src/pyinfer/meta/analytics_native.c
NATIVE_LIBS := src/pyinfer/meta/roi_native$(EXT_SUFFIX) src/pyinfer/track/track_native$(EXT_SUFFIX)
setup: $(VENV)/.installed $(NATIVE_LIBS)

# The install below builds them; this builds them again where a C file or setup.py changed, or where they are
# missing (a fresh copy of the tree beside an existing .venv, as in .ci/debian13.sh).
$(NATIVE_LIBS) &: $(NATIVE_SRC) | $(VENV)/.installed
	PIP_FIND_LINKS= $(PY) -m pip install -q --no-deps -e .

apt:
	@if ! dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | grep -qv "install ok installed" \
	    && [ "$$(dpkg-query -W -f='$${Status}\n' $(APT_PACKAGES) 2>/dev/null | wc -l)" = "$(words $(APT_PACKAGES))" ]; then \
	  echo "Debian packages: present"; \
	else \
	  echo "Installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES); \
	fi

$(VENV)/.installed: pyproject.toml | apt
	@[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	@$(PY) -c "import torch, torchvision" 2>/dev/null || PIP_FIND_LINKS= $(PY) -m pip install -q $(TORCH_PACKAGES)
	@# The distribution was called "pyinfer" before it became pyinfer-gst: an old editable install goes first.
	@if $(PY) -m pip show -q pyinfer >/dev/null 2>&1; then $(PY) -m pip uninstall -y -q pyinfer; fi
	PIP_FIND_LINKS= $(PY) -m pip install -q -e '.[test]'
	@# backend=triton's tests start a real Triton Inference Server: the tritonserver binary (CPU, python backend)
	@# of the nvidia-pytriton wheel. --no-deps: its own Python code pins numpy<2 and is never imported; the
	@# binary needs only libpython3.11 (from libpython3-dev above) and the tritonclient of the triton extra.
	PIP_FIND_LINKS= $(PY) -m pip install -q --no-deps $(TRITON_SERVER_PACKAGE)
	@$(PY) -c "import gi; gi.require_version('Gst', '1.0'); import torch, torchvision, pyinfer; print('pyinfer', pyinfer.__version__, 'torch', torch.__version__)"
	@touch $@

demo: setup
	@mkdir -p $(DEMO_DIR)
	$(VENV)/bin/pyinfer scene --frames $(DEMO_FRAMES) --seed 2024 --width 1280 --height 720 --out $(DEMO_DIR)
	$(VENV)/bin/pyinfer detect $(DEMO_DIR)/video.mp4 --track --publish $(DEMO_DIR)/messages.jsonl \
	    --json $(DEMO_DIR)/detections.jsonl --video $(DEMO_DIR)/annotated.mp4
	$(VENV)/bin/pyinfer eval --json $(DEMO_DIR)/detections.jsonl --truth $(DEMO_DIR)/truth.jsonl
	@echo "--- rotated boxes: the shapes-obb model through the same chain"
	$(VENV)/bin/pyinfer scene --rotated --frames $(DEMO_FRAMES) --seed 2025 --width 1280 --height 720 --out $(DEMO_DIR)/rotated
	$(VENV)/bin/pyinfer detect $(DEMO_DIR)/rotated/video.mp4 --model-engine "$$($(VENV)/bin/pyinfer models --path shapes-obb)" \
	    --track --publish $(DEMO_DIR)/rotated/messages.jsonl --json $(DEMO_DIR)/rotated/detections.jsonl \
	    --video $(DEMO_DIR)/rotated/annotated.mp4
	$(VENV)/bin/pyinfer eval --rotated --json $(DEMO_DIR)/rotated/detections.jsonl --truth $(DEMO_DIR)/rotated/truth.jsonl
	@echo "--- secondary inference: the marks classifier on every tracked object (pyinfer process-mode=secondary)"
	$(VENV)/bin/pyinfer scene --marked --frames $(DEMO_FRAMES) --seed 2026 --width 1280 --height 720 --out $(DEMO_DIR)/marked
	$(VENV)/bin/pyinfer detect $(DEMO_DIR)/marked/video.mp4 --track --secondary marks --secondary-reinfer-interval 5 \
	    --publish $(DEMO_DIR)/marked/messages.jsonl --json $(DEMO_DIR)/marked/detections.jsonl \
	    --video $(DEMO_DIR)/marked/annotated.mp4
	$(VENV)/bin/pyinfer eval --json $(DEMO_DIR)/marked/detections.jsonl --truth $(DEMO_DIR)/marked/truth.jsonl
	@echo "--- instance segmentation: the shapes-seg model, masks scored against the scene's exact masks"
	@mkdir -p $(DEMO_DIR)/seg
	$(VENV)/bin/pyinfer detect $(DEMO_DIR)/video.mp4 --model-engine "$$($(VENV)/bin/pyinfer models --path shapes-seg)" \
	    --track --json $(DEMO_DIR)/seg/detections.jsonl --video $(DEMO_DIR)/seg/annotated.mp4
	$(VENV)/bin/pyinfer eval --json $(DEMO_DIR)/seg/detections.jsonl --truth $(DEMO_DIR)/truth.jsonl --masks-seed 2024
	@echo "--- keypoints: the vertices model on every object's crop, scored against the shapes' vertices"
	@mkdir -p $(DEMO_DIR)/vertices
	$(VENV)/bin/pyinfer detect $(DEMO_DIR)/video.mp4 --track --secondary vertices \
	    --json $(DEMO_DIR)/vertices/detections.jsonl --video $(DEMO_DIR)/vertices/annotated.mp4
	$(VENV)/bin/pyinfer eval --json $(DEMO_DIR)/vertices/detections.jsonl --truth $(DEMO_DIR)/truth.jsonl --vertices
	@echo "--- text: the embedded counter model captions frames beside the video (pyvlm, docs/vlm.md)"
	$(VENV)/bin/python -m pyinfer.text.demo $(DEMO_DIR)/video.mp4 --truth $(DEMO_DIR)/truth.jsonl --out $(DEMO_DIR)/text
	@echo "Annotated videos: $(DEMO_DIR)/annotated.mp4 $(DEMO_DIR)/rotated/annotated.mp4 $(DEMO_DIR)/marked/annotated.mp4 $(DEMO_DIR)/seg/annotated.mp4 $(DEMO_DIR)/vertices/annotated.mp4 $(DEMO_DIR)/text/annotated.mp4"
	@echo "Detections (JSON lines, with track ids): $(DEMO_DIR)/detections.jsonl; messages: $(DEMO_DIR)/messages.jsonl"

# Lint, format check and type check (ruff and mypy, pinned in the test extra; configured in pyproject.toml).
# Runs once, here: the Debian 13 leg runs only the suite.
LINT_DIRS := src tests bench train
lint: setup
	$(PY) -m ruff check $(LINT_DIRS)
	$(PY) -m ruff format --check $(LINT_DIRS)
	$(PY) -m mypy

# A hard limit, so that a hang cannot use up CI's time: the suite takes 6 to 7 minutes on 2 cores. The Debian 13
# leg has its own limits (.ci/debian13.sh: 45 minutes at most, all steps included).
TEST_TIMEOUT ?= 1200
# `make lint` first (a failure stops here). Both legs run even when the first fails; the exit status says whether
# both passed.
test: setup lint
	@rc=0; rc13=0; \
	echo "=== Debian 12 leg: $$(. /etc/os-release; echo $$PRETTY_NAME) (this machine)"; \
	timeout --kill-after=30 $(TEST_TIMEOUT) $(PY) -m pytest || rc=$$?; \
	echo "=== Debian 12 leg: exit $$rc"; \
	echo "=== Debian 13 leg: GStreamer 1.26, Python 3.13, in a root file system (.ci/debian13.sh)"; \
	bash .ci/debian13.sh || rc13=$$?; \
	echo "=== Debian 13 leg: exit $$rc13"; \
	[ $$rc = 0 ] && [ $$rc13 = 0 ]

# The suite on this machine only (for development).
test-fast: setup
	timeout --kill-after=30 $(TEST_TIMEOUT) $(PY) -m pytest

# The Debian 13 leg alone (needs no setup here).
test-debian13:
	bash .ci/debian13.sh

bench: setup
	$(PY) bench/cpu_pipeline.py

clean:
	rm -rf out .pytest_cache
