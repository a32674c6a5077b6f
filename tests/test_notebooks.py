"""Every notebook in ``notebooks/`` runs top to bottom as a real Jupyter notebook.

The notebooks are jupytext "percent" scripts without outputs. Each is read with jupytext and executed
cell by cell by nbclient in an ipykernel of this interpreter (a kernelspec written into a temporary
folder, so no other installed kernel can be picked up), with matplotlib's non-interactive Agg
backend. They share one demo collection and index (``MOSAIC_INDEX``) and each writes into its own
temporary folder (``MOSAIC_NOTEBOOK_DIR``). A notebook asserts its own key facts, so a notebook that
runs is a notebook whose claims hold; a new notebook is picked up by the glob. Every figure a notebook
shows must draw its data, not nodata, with its colours (an injected check on ``plt.show``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jupytext
import nbformat
import pytest
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
from nbclient import NotebookClient

import mosaic
from conftest import JUPYTER_KERNEL

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
CELL_TIMEOUT = 300  # seconds per cell; the notebooks take seconds on 2 cores

PROBE = """\
import json as _json, os as _os, sys as _sys
_probe = {"executable": _sys.executable, "prefix": _sys.prefix, "mplbackend": _os.environ.get("MPLBACKEND")}
print(_json.dumps(_probe))
"""
"""A first cell injected before the notebook's own: which interpreter and backend the kernel has."""
CHECKED_SHOW = """\
import importlib.util as _util, sys as _sys, matplotlib.pyplot as _plt
_spec = _util.spec_from_file_location("_docs_figures", {script!r})
_figures = _sys.modules["_docs_figures"] = _util.module_from_spec(_spec)
_spec.loader.exec_module(_figures)
_show = _plt.show
def _checked_show(*args, **kwargs):
    _problems = [p for n in _plt.get_fignums() for p in _figures.colour_scale_problems(_plt.figure(n))]
    assert not _problems, f"images whose colour scale is not the data's: {{_problems}}"
    return _show(*args, **kwargs)
_plt.show = _checked_show
""".format(script=str(ROOT / "docs" / "_figures.py"))
"""A second injected cell: every figure a notebook shows spends its colour scale on the data, not on
an unmasked nodata value (``colour_scale_problems`` of ``docs/_figures.py``, which also makes the
site's pictures from these notebooks)."""
TIDY = """\
import multiprocessing as _mp, matplotlib.pyplot as _plt
assert not _plt.get_fignums(), f"figures left open: {_plt.get_fignums()}"
assert not _mp.active_children(), f"child processes left running: {_mp.active_children()}"
"""
"""A last cell appended after the notebook's own: every figure closed, no worker process left."""


@pytest.fixture(scope="module")
def notebook_index(demo_index: mosaic.TileIndex, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo collection's index, saved once for every notebook of the module (``MOSAIC_INDEX``)."""
    return demo_index.write(tmp_path_factory.mktemp("notebook-index") / "index.parquet")


def check_batch_regridding(workdir: Path, stdout: str) -> None:
    assert "resumed: 0 regions written" in stdout
    for store in ("pancakes.zarr", "churros.zarr"):
        with xr.open_zarr(workdir / store) as ds:
            assert ds.attrs["regrid_status"] == "complete" and ds.rio.crs.to_epsg() == 4326
    with xr.open_zarr(workdir / "churros.zarr") as ds:
        assert ds.B02.encoding["chunks"] == (3, 128, 128)  # the time-series (churro) layout


def check_quickstart(workdir: Path, stdout: str) -> None:
    assert (workdir / "plan.png").stat().st_size > 10_000


def check_gdal_gti(workdir: Path, stdout: str) -> None:
    assert (workdir / "seam.gti.gpkg").exists()
    identical = re.search(r"identical: ([0-9.]+)% of the [0-9]+ pixels with data", stdout)
    assert identical is not None and float(identical[1]) > 99.0  # GDAL reads what mosaic.load gives


CHECKS: dict[str, Callable[[Path, str], None]] = {
    "batch_regridding": check_batch_regridding,
    "quickstart": check_quickstart,
    "gdal_gti": check_gdal_gti,
}
"""Checks from outside, on what a notebook wrote and printed (beyond its own asserts)."""


def stdout_of(nb: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stdout"
    )


OWN_COLLECTION = {
    "composites_and_timeseries": "checks what it shows against the synthetic truth of the cloudy "
    "collection (clouds, SCL and QA_PIXEL bands) it generates, which no other index has",
}
"""Notebooks that always make their own collection: the one place a saved index (MOSAIC_INDEX) is not
offered, each with its reason."""


def test_every_notebook_follows_the_house_style():
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "many_crs", "gdal_gti", "batch_regridding"}
    for path in NOTEBOOKS:
        nb = jupytext.read(path)
        assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "percent", path.name
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), path.name
        code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
        if path.stem not in OWN_COLLECTION:
            assert 'os.environ.get("MOSAIC_INDEX")' in code, path.name
        assert 'os.environ.get("MOSAIC_NOTEBOOK_DIR")' in code, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, notebook_index, jupyter_path, tmp_path, monkeypatch):
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))  # where the client finds the kernelspec
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MOSAIC_", "MPLBACKEND"))},
        "MOSAIC_INDEX": str(notebook_index),
        "MOSAIC_NOTEBOOK_DIR": str(workdir),
    }
    nb = jupytext.read(path)
    nb.cells.insert(0, nbformat.v4.new_code_cell(PROBE))
    nb.cells.insert(1, nbformat.v4.new_code_cell(CHECKED_SHOW))
    nb.cells.append(nbformat.v4.new_code_cell(TIDY))
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name=JUPYTER_KERNEL,
        resources={"metadata": {"path": str(workdir)}},  # the kernel's working folder
    )
    before = sorted((ROOT / "notebooks").iterdir())
    start = time.perf_counter()
    client.execute(env=env)  # raises CellExecutionError, with the cell and traceback, if a cell fails
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")

    probe = json.loads(nb.cells[0].outputs[0]["text"])
    assert probe == {"executable": sys.executable, "prefix": sys.prefix, "mplbackend": "Agg"}
    assert sorted((ROOT / "notebooks").iterdir()) == before, "the notebook wrote beside itself"
    if path.stem in CHECKS:
        CHECKS[path.stem](workdir, stdout_of(nb))
