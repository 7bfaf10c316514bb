# edgesight: `make demo` runs the main job, `make test` runs the tests. Each creates .venv
# (if missing) and installs what it needs; nothing else has to be installed by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch==2.13.0 is pinned: it is the CPU build that lies on these machines' disk; an unpinned
# torch pulls a multi-GB CUDA build.
DEV_PKGS := -e .[dev,export,onnx,litert,mqtt,plot,crypto,web] torch==2.13.0
# The demo runs the device runtime; torch + onnx are only used once, to export the MiniFASNet
# liveness pair (there is no upstream ONNX of it) into the virtualenv.
RUN_PKGS := -e .[onnx,litert,crypto,mqtt] torch==2.13.0 onnx onnxscript
LIVENESS := $(VENV)/share/edgesight/liveness
# Real servers the tests start themselves: an MQTT broker, PAM's test driver, a headless browser
# for the web page, systemd's socket-activation tool for the unlock service, and OpenSSH servers
# and client for the flashing tests (Debian packages).
SYSTEM_PKGS := mosquitto pamtester chromium systemd openssh-server openssh-client
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-quick clean system-deps bench-deps

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.run-installed: $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install -q $(RUN_PKGS)
	touch $@

$(VENV)/.dev-installed: $(VENV)/bin/python pyproject.toml Makefile
	$(PY) -m pip install -q $(DEV_PKGS)
	# Ultralytics extra without its requirements (they would pull GUI opencv-python and torchvision).
	$(PY) -m pip install -q --no-deps ultralytics==8.4.190 ultralytics-thop==2.2.3
	touch $(VENV)/.run-installed $@

system-deps:
	@missing=""; for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

demo: $(VENV)/.run-installed
	@[ -f $(LIVENESS)/minifasnet_v2_scale2.7.onnx ] || $(VENV)/bin/edge-export liveness --out $(LIVENESS)
	$(VENV)/bin/edge demo --liveness-dir $(LIVENESS)

test: system-deps $(VENV)/.dev-installed
	$(PY) -m pytest -q -p no:cacheprovider

test-quick: system-deps $(VENV)/.dev-installed
	$(PY) -m pytest -q -x -m "not slow" -p no:cacheprovider

# Reference pipelines for benchmarks/face_speed.py (dlib, as Howdy uses it).
bench-deps: $(VENV)/.dev-installed
	$(PY) -m pip install -q -e .[bench]

clean:
	rm -rf $(VENV) build *.egg-info

# Device runtime on aarch64 under qemu-user emulation (tools/arm/README section in README.md):
# a cached Debian bookworm arm64 root, the wheel of this checkout, real rpi4/rpi5 bundles, every
# output compared with x86. Needs root; not part of `make test` (see README for its duration).
.PHONY: arm-check
arm-check: $(VENV)/.dev-installed
	PY=$(abspath $(PY)) tools/arm/check.sh
