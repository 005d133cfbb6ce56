# Two commands on a fresh Debian machine:
#   make run    start the detector on the default microphone with the default model and engine
#   make test   run the whole test suite
# Each creates .venv and installs what it needs, Debian packages included.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_RUN := libportaudio2
APT_TEST := libportaudio2 pulseaudio pulseaudio-utils alsa-utils libasound2-plugins xvfb x11-utils imagemagick espeak-ng \
	libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0 libxcb-randr0 libxcb-render-util0 libxcb-shape0 \
	libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 libdbus-1-3
ARGS ?=

.PHONY: run test install-run install-test clean

$(VENV)/.apt-run:
	@mkdir -p $(VENV)
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_RUN)
	touch $@

$(VENV)/.apt-test:
	@mkdir -p $(VENV)
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_TEST)
	touch $@

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The edge install: numpy, onnxruntime, sounddevice, soundfile, soxr (no torch).
$(VENV)/.pip-run: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $@

# Everything the tests use: torch + torchaudio (pinned pair), Qt/pyqtgraph, training, dev tools and the Triton server.
$(VENV)/.pip-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[torch,gui,train,profile,dev,serve]"
	touch $@

install-run: $(VENV)/.apt-run $(VENV)/.pip-run
install-test: $(VENV)/.apt-test $(VENV)/.pip-test

# stderr also goes to .venv/.run-stderr, so that a failure to open the microphone can add how to replay a file instead
run: install-run
	@set -o pipefail; { $(VENV)/bin/aed listen $(ARGS) 2>&1 1>&3 | tee -i $(VENV)/.run-stderr >&2; } 3>&1 || { rc=$$?; \
	  if grep -qE "input device|audio devices|PortAudio" $(VENV)/.run-stderr; then \
	    echo 'make run: no usable microphone; replay a file through the live path instead: make run ARGS="--source FILE"' >&2; \
	  fi; exit $$rc; }

test: install-test
	$(PY) -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
