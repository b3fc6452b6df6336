# Likeness developer entry points. `make demo` and `make test` set up everything they need on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TOOLS_STAMP := tools/node_modules/.installed
export HF_HUB_OFFLINE := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup tools demo test test-fast test-fullsize lint format proto proto-check proto-release bench base-model eval clean

setup: $(STAMP)

# On machines without an NVIDIA GPU the CPU build of torch goes in first and is pinned by constraints.txt, so no
# dependency can pull a multi-GB CUDA build. With a GPU, pip picks the CUDA build the range allows.
$(STAMP): pyproject.toml clients/python/pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PIP) install -q -e clients/python && $(PIP) install -q -e '.[dev]'; \
	else \
	  $(PIP) install -q torch==2.13.0 && $(PIP) install -q -e clients/python -c constraints.txt && \
	  $(PIP) install -q -e '.[dev]' -c constraints.txt; \
	fi
	# Ships OpenAI CLIP's BPE vocabulary, used by the tiny models. --no-deps: its dependencies pull torchvision.
	$(PIP) install -q --no-deps 'open-clip-torch>=2.24,<4'
	touch $(STAMP)

tools: $(TOOLS_STAMP)
	bash scripts/install_tools.sh

$(TOOLS_STAMP): tools/package.json
	cd tools && npm ci --no-audit --no-fund --silent
	touch $(TOOLS_STAMP)

demo: setup
	$(PY) -m likeness.cli.main demo --out out

test: setup tools proto-check
	cd protos && ../tools/node_modules/.bin/buf lint
	cd protos && ../tools/node_modules/.bin/buf breaking --against released/likeness-v1.binpb
	$(VENV)/bin/ruff check services tests bench scripts clients/python
	$(VENV)/bin/ruff format --check services tests bench scripts clients/python
	$(VENV)/bin/mypy
	cd services && ../$(VENV)/bin/mypy --config-file mypy.ini likeness
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Full-size SD 1.5, SD 2.x 768-v and SDXL single files (A1111 layout) written from uninitialised weights and loaded
# offline with the shipped configs, every tensor compared (docs/models.md). Not in `make test`: ~80 s, up to 7 GB of
# disk in the temp dir at a time and ~14 GB peak memory (SDXL, half of it the mapped file).
test-fullsize: setup
	LIKENESS_FULLSIZE_TESTS=1 $(PY) -m pytest -q -p no:cacheprovider tests/models/test_models_single_file_fullsize.py

lint: setup tools
	$(VENV)/bin/ruff check services tests bench scripts clients/python
	$(VENV)/bin/ruff format --check services tests bench scripts clients/python
	cd protos && ../tools/node_modules/.bin/buf lint

format: setup
	$(VENV)/bin/ruff format services tests bench scripts clients/python
	$(VENV)/bin/ruff check --fix services tests bench scripts clients/python

# One `buf generate` (buf.gen.yaml) writes the Python, TypeScript and Go code; see scripts/gen_protos.py.
proto: setup tools
	$(PY) scripts/gen_protos.py

proto-check: setup tools
	$(PY) scripts/gen_protos.py --check

# At a release: the protos as released become the baseline `buf breaking` checks every change against.
proto-release: tools
	cd protos && ../tools/node_modules/.bin/buf build -o released/likeness-v1.binpb

bench: setup
	$(PY) bench/run.py

base-model: setup
	$(PY) -m likeness.world.pretrain --out services/likeness/world/weights

eval: setup
	$(PY) -m likeness.cli.main eval

clean:
	rm -rf $(VENV) tools/node_modules out var .pytest_cache
