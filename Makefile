# edgesight: `make demo` runs the main job, `make test` runs the tests. Each creates .venv
# (if missing) and installs what it needs; nothing else has to be installed by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch==2.13.0 is pinned: it is the CPU build that lies on these machines' disk; an unpinned
# torch pulls a multi-GB CUDA build.
DEV_PKGS := -e .[dev,export,onnx,litert] torch==2.13.0 onnxscript
RUN_PKGS := -e .[onnx,litert,crypto]

.PHONY: demo test test-quick clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.run-installed: $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install -q $(RUN_PKGS)
	touch $@

$(VENV)/.dev-installed: $(VENV)/bin/python pyproject.toml Makefile
	$(PY) -m pip install -q $(DEV_PKGS)
	touch $(VENV)/.run-installed $@

demo: $(VENV)/.run-installed
	$(VENV)/bin/edge demo

test: $(VENV)/.dev-installed
	$(PY) -m pytest -q -p no:cacheprovider

test-quick: $(VENV)/.dev-installed
	$(PY) -m pytest -q -x -m "not slow" -p no:cacheprovider

clean:
	rm -rf $(VENV) build *.egg-info
