# Two commands on a fresh Debian machine with Python 3.11:
#   make demo   - create .venv, install the engine, run one exposure end to end on the simulators
#   make test   - same set-up, then `make lint`, then the whole test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SOURCES := setup.py pyproject.toml $(wildcard native/*.pyx native/*.pxd)
# The import contracts (layers of the packages); see the file's comments and README's Layout.
IMPORT_CONTRACTS := .importlinter

.PHONY: demo test bench soak fuzz lint clean install _apt

install: $(STAMP)

$(STAMP): $(SOURCES)
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "DIOS needs Python >= 3.11"'
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || $(MAKE) --no-print-directory _apt PKGS="python3-venv"
	@$(PYTHON) -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
		2>/dev/null || $(MAKE) --no-print-directory _apt PKGS="python3-dev"
	@command -v cc >/dev/null 2>&1 || $(MAKE) --no-print-directory _apt PKGS="build-essential"
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[test,postgres]'
	@$(BIN)/python -c 'import native; native.check()' || { echo "compiled core missing: install failed"; exit 1; }
	@touch $@

# Install Debian packages the set-up needs (a fresh machine has no compiler or venv module).
_apt:
	@echo "installing Debian packages: $(PKGS)"
	@if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install $(PKGS); install them and rerun"; exit 1; fi
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(PKGS)

demo: $(STAMP)
	$(BIN)/dios acquire

# The suite runs only on code that keeps the lint rules and the import contracts.
test: $(STAMP) lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	@mkdir -p bench/results
	$(BIN)/python -m pytest bench -o testpaths=bench --benchmark-only \
		--benchmark-json=bench/results/latest.json -p no:cacheprovider

# Long safety runs (minutes): the random multi-client exposure driver and the HTTP races at
# ten times the bounds of `make test`; counts in bench/results/soak-safety.json.
SOAK_SEQUENCES ?= 1000
SOAK_RACES ?= 1000
soak: $(STAMP)
	@mkdir -p bench/results
	DIOS_SAFETY_SEQUENCES=$(SOAK_SEQUENCES) DIOS_RACES=$(SOAK_RACES) \
		DIOS_SAFETY_REPORT=bench/results/soak-safety.json \
		$(BIN)/python -m pytest tests/test_exposure_safety.py -s -q -o timeout=7200
	@cat bench/results/soak-safety.json

# The OpenAPI fuzz at ten times the bound of `make test`: schemathesis over every operation
# of the live server, no 5xx and no Python names in any description.
FUZZ_REQUESTS ?= 20000
fuzz: $(STAMP)
	DIOS_FUZZ_REQUESTS=$(FUZZ_REQUESTS) $(BIN)/python -m pytest tests/test_openapi_fuzz.py \
		-s -q -p no:randomly -o timeout=3600

# ruff, then import-linter on the contracts file (no cache directory left in the tree).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports $(IMPORT_CONTRACTS) --no-cache --no-logo

clean:
	rm -rf $(VENV) build *.egg-info native/*.so native/*.c
