# Two commands on a fresh machine with only Python: `make demo` and `make test`.
# Both create .venv and install into it; the install re-runs only when pyproject.toml changes.
# `make test-oldest` runs the same checks in .venv-oldest, with every direct dependency at its floor.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
DEMO_OUT ?= demo_output

.PHONY: demo test test-oldest lint typecheck gdal-tools browser azurite benchmark docs docs-figures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mosaic demo --out $(DEMO_OUT)

# gdalwarp / gdaltindex (Debian's gdal-bin) are the reference the engine is checked against.
gdal-tools:
	@command -v gdalwarp >/dev/null 2>&1 || { \
	  echo "installing gdal-bin (gdalwarp, gdaltindex) for the GDAL parity tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq gdal-bin >/dev/null; }

# Debian's headless chromium loads the map page of `mosaic serve` in tests/test_serve.py.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium for the map page test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Azurite (the Azure Storage emulator, from the npm registry) for tests/test_credentials.py, installed
# once into a cache folder (tests/servers.py looks there; MOSAIC_AZURITE_DIR moves it). Offline or
# without npm, nothing is installed: the tests then say how (skipped only where Node.js is missing).
AZURITE_DIR ?= $(HOME)/.cache/mosaic-tests/azurite
export MOSAIC_AZURITE_DIR := $(AZURITE_DIR)
azurite:
	@test -x $(AZURITE_DIR)/node_modules/.bin/azurite-blob || { \
	  command -v npm >/dev/null 2>&1 || { echo "npm not found: the Azure tests are skipped"; exit 0; }; \
	  echo "installing azurite (npm) into $(AZURITE_DIR) for the Azure tests"; \
	  npm install --silent --no-audit --no-fund --prefix $(AZURITE_DIR) azurite@3.35.0 >/dev/null \
	    || echo "npm install azurite failed (offline?): the Azure tests will say how to install it"; }

test: $(STAMP) gdal-tools browser azurite
	$(BIN)/ruff check src tests tile_indexes notebooks benchmarks
	$(BIN)/mypy src/mosaic
	$(BIN)/python -m pytest

# The lower bounds of pyproject.toml, proven: a second venv where uv installs the LOWEST allowed version
# of every direct dependency (runtime and dev; the transitive ones are whatever resolves with them), then
# the checks of `make test`. uv comes from PyPI into that venv (no other tool needed); see
# docs/dependencies.md.
OLDEST       ?= .venv-oldest
OLDEST_BIN   := $(OLDEST)/bin
OLDEST_STAMP := $(OLDEST)/.installed-oldest

$(OLDEST_STAMP): pyproject.toml
	rm -rf $(OLDEST)
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST_BIN)/python -m pip install --quiet uv
	$(OLDEST_BIN)/uv pip install --quiet --python $(OLDEST_BIN)/python --resolution lowest-direct -e '.[dev]'
	touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP) gdal-tools browser azurite
	$(OLDEST_BIN)/python -m pip freeze --exclude-editable | grep -v '^uv=='
	$(OLDEST_BIN)/ruff check src tests tile_indexes notebooks benchmarks
	$(OLDEST_BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy src/mosaic

benchmark: $(STAMP)
	$(BIN)/python benchmarks/index_scale.py

# the documentation site, into site/ (open site/index.html); --strict fails on broken links/anchors
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# the site's pictures (docs/images/*.png), made again from the demo, docs/index.md and the notebooks (~40 s)
docs-figures: $(STAMP)
	$(BIN)/python docs/_figures.py

clean:
	rm -rf $(VENV) $(OLDEST) $(DEMO_OUT) .pytest_cache build dist
