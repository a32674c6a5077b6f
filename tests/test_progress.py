"""Eager loads (``chunks=None``) and progress bars, in a terminal and in a real Jupyter kernel.

tqdm's notebook bar needs ipywidgets; without it ``tqdm.auto`` prints "IProgress not found" in a
kernel. mosaic's bars (``load(..., progress=True)``, ``TileIndex.from_files(..., progress=True)``,
``regrid``) use the text bar there unless ipywidgets is installed.
"""

from __future__ import annotations

import json
import os

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

import mosaic
import real_data
from conftest import JUPYTER_KERNEL
from mosaic import InvalidInputError

SEAM = (11.88, 45.40, 12.12, 45.58)


def test_an_eager_load_is_numpy_backed_and_equals_the_lazy_load_computed(demo_index, capsys):
    args = dict(index=demo_index, resolution=100, bands=["B02", "WVP", "visual.1"])
    eager = mosaic.load(SEAM, "EPSG:32633", "2024-06", chunks=None, **args)
    assert capsys.readouterr().err == ""  # no bar unless asked
    lazy = mosaic.load(SEAM, "EPSG:32633", "2024-06", **args)  # default chunks: the eager load's tasks
    for name in args["bands"]:
        assert isinstance(eager[name].data, np.ndarray) and not isinstance(lazy[name].data, np.ndarray)
    assert eager.identical(lazy.compute())


def test_progress_shows_a_bar_of_the_eager_load(demo_index, capsys):
    ds = mosaic.load(
        SEAM, "EPSG:32633", "2024-06-01", index=demo_index, resolution=200, chunks=None, progress=True
    )
    assert isinstance(ds.B02.data, np.ndarray)
    err = capsys.readouterr().err
    assert "mosaic.load" in err and "100%" in err


def test_progress_of_a_lazy_load_is_an_error_that_says_what_to_do(demo_index):
    with pytest.raises(InvalidInputError, match=r"chunks=None.*dask\.diagnostics\.ProgressBar"):
        mosaic.load(SEAM, "EPSG:32633", "2024-06-01", index=demo_index, resolution=200, progress=True)


CELLS = [
    """\
import importlib.util, warnings
warnings.simplefilter("always")  # a warning shown once per process must show here
import numpy as np
import mosaic
from mosaic import TileIndex
print(importlib.util.find_spec("ipywidgets") is not None)
""",
    "index = TileIndex.from_files([{l7!r}], progress=True)",
    """\
ds = mosaic.load(index.footprints[0].bounds, "EPSG:31985", index=index, resolution=60, bands="data.1",
                 groupby=None, chunks=None, progress=True)
assert isinstance(ds["data.1"].data, np.ndarray)
lazy = mosaic.load(index.footprints[0].bounds, "EPSG:31985", index=index, resolution=60, bands="data.1",
                   groupby=None)
assert ds.identical(lazy.compute())
""",
    """\
report = mosaic.regrid({store!r}, index.footprints[0].bounds, "EPSG:31985", index=index,
                              resolution=60, bands="data.1", groupby=None, chunks=64, progress=True)
print(report.written)
""",
]


def test_no_ipywidgets_warning_in_a_jupyter_kernel(jupyter_path, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    code = [c.format(l7=str(real_data.L7), store=str(tmp_path / "out.zarr")) for c in CELLS]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in code])
    client = NotebookClient(
        nb, timeout=300, kernel_name=JUPYTER_KERNEL, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute(env=dict(os.environ))  # raises CellExecutionError if a cell fails
    outputs = [out for cell in nb.cells for out in cell.outputs]
    text = json.dumps(outputs)
    assert "IProgress" not in text and "ipywidgets" not in text and "TqdmWarning" not in text
    has_widgets = nb.cells[0].outputs[0]["text"].strip() == "True"
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    if has_widgets:  # tqdm's widget bars, shown as display data
        assert sum(o["output_type"] == "display_data" for o in outputs) >= 3
    else:  # text bars on stderr, one per cell
        for cell in nb.cells[1:]:
            err = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
            assert "100%" in err, cell.source
        assert "indexing files" in stderr and "mosaic.load" in stderr and "out.zarr" in stderr
    stdout = "".join(o.get("text", "") for o in nb.cells[3].outputs if o.get("name") == "stdout")
    assert int(stdout) > 0  # regions written
