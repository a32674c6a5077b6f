# Two commands on a fresh machine with only Python: `make demo` and `make test`.
# Both create .venv and install into it; the install re-runs only when pyproject.toml changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev
DEMO_OUT ?= demo_output

.PHONY: demo test lint typecheck gdal-tools benchmark docs docs-figures clean

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

test: $(STAMP) gdal-tools
	$(BIN)/ruff check src tests tile_indexes notebooks benchmarks
	$(BIN)/mypy src/mosaic
	$(BIN)/python -m pytest

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
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache build dist
