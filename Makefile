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
	libpython3-dev mosquitto redis-server libgstreamer-plugins-base1.0-dev gcc g++ pkg-config
# A tested torch/torchvision pair from the package index (CUDA builds; they run on the CPU too).
# PIP_FIND_LINKS is cleared so a local CPU-only torch wheel without a matching torchvision is not picked.
TORCH_PACKAGES := torch==2.14.1 torchvision==0.29.2
DEMO_DIR := out/demo
DEMO_FRAMES ?= 300

.PHONY: setup demo lint test test-fast test-debian13 bench clean apt
# The native helpers (optional at run time, each self-tested against its Python reference before use):
# pyinfer.meta.roi's metadata reader/writer (else the ctypes path) and pyinfer.track's tracker core (else NumPy).
NATIVE_SO := src/pyinfer/meta/libroi_native.so
TRACK_SO := src/pyinfer/track/libtrack_native.so
setup: $(VENV)/.installed $(NATIVE_SO) $(TRACK_SO)

$(NATIVE_SO): src/pyinfer/meta/roi_native.c | apt
	cc -O2 -Wall -shared -fPIC -o $@ $< $$(pkg-config --cflags --libs gstreamer-video-1.0)

# -ffp-contract=off: no fused multiply-add, so the C tracker's arithmetic is NumPy's, bit for bit.
$(TRACK_SO): src/pyinfer/track/track_native.c | apt
	cc -O2 -Wall -Wextra -ffp-contract=off -shared -fPIC -o $@ $< -lm

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
	PIP_FIND_LINKS= $(PY) -m pip install -q -e '.[test]'
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
	@echo "Annotated videos: $(DEMO_DIR)/annotated.mp4 $(DEMO_DIR)/rotated/annotated.mp4"
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
