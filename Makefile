# Two commands on a fresh Debian machine with Python 3.11:
#   make demo   - create .venv, install the engine, run one exposure end to end on the simulators
#   make test   - same set-up, then the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SOURCES := setup.py pyproject.toml $(wildcard native/*.pyx native/*.pxd)

.PHONY: demo test bench lint clean install

install: $(STAMP)

$(STAMP): $(SOURCES)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "DIOS needs Python >= 3.11"'
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { echo "python3-venv missing: installing it"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[test,postgres]'
	@$(BIN)/python -c 'import native; native.check()' || { echo "compiled core missing: install failed"; exit 1; }
	@touch $@

demo: $(STAMP)
	$(BIN)/dios acquire

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	@mkdir -p bench/results
	$(BIN)/python -m pytest bench -o testpaths=bench --benchmark-only \
		--benchmark-json=bench/results/latest.json -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info native/*.so native/*.c
