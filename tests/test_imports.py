"""Fixed costs: what ``import mosaic``, ``mosaic --help`` and a local compute import (fresh processes).

These assert which modules a fresh interpreter holds, never how long anything took.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest

import mosaic
from mosaic.cli import cli

ENGINE = (
    "numpy",
    "pandas",
    "xarray",
    "rioxarray",
    "dask",
    "distributed",
    "pyarrow",
    "geopandas",
    "pyogrio",
    "rasterio",
    "pyproj",
    "shapely",
    "odc",
    "pystac",
    "zarr",
    "fsspec",
    "tenacity",
    "matplotlib",
)
"""Packages that ``import mosaic`` and the CLI's help leave to the first call that needs them."""

SRC = Path(mosaic.__file__).resolve().parent.parent


def run_python(code: str, cwd: Path | None = None) -> str:
    """Run ``code`` in a fresh interpreter importing this checkout's mosaic; its stdout."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def loaded(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(ENGINE))


def test_import_mosaic_imports_only_the_errors() -> None:
    out = run_python("import json, sys, mosaic; print(json.dumps(sorted(sys.modules)))")
    modules = json.loads(out)
    assert loaded(modules) == []
    assert sorted(m for m in modules if m.split(".")[0] == "mosaic") == [
        "mosaic",
        "mosaic._lazy",
        "mosaic.errors",
    ]


@pytest.mark.parametrize("stage", ["index", "planning", "io", "outputs"])
def test_a_stage_imports_nothing_until_its_public_names_are_used(stage: str) -> None:
    out = run_python(
        f"""
        import json, sys, mosaic.{stage} as stage
        before = sorted(m for m in sys.modules if m.startswith("mosaic"))
        names = {{name: getattr(stage, name).__module__ for name in stage.__all__}}
        print(json.dumps([before, names, dir(stage)]))
        """
    )
    before, names, listed = json.loads(out)
    assert before == ["mosaic", "mosaic._lazy", "mosaic.errors", f"mosaic.{stage}"]
    assert all(module.startswith(f"mosaic.{stage}.") for module in names.values())
    assert listed == sorted(names)


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group of the CLI, as the words that name it (the root is ``()``)."""
    paths = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def test_every_help_imports_no_engine() -> None:
    paths = command_paths(cli)
    assert ("regrid",) in paths and (
        "index",
        "build",
    ) in paths
    out = run_python(
        f"""
        import contextlib, io, json, sys
        from mosaic.cli import main
        texts = []
        for words in {paths!r}:
            sys.argv = ["mosaic", *words, "--help"]
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
                main()
            texts.append(buffer.getvalue())
        print(json.dumps({{"modules": sorted(sys.modules), "texts": texts}}))
        """
    )
    result = json.loads(out)
    for words, text in zip(paths, result["texts"], strict=True):
        assert text.startswith(f"Usage: mosaic {' '.join(words)}".rstrip()), (words, text)
    assert loaded(result["modules"]) == []


def test_every_public_name_is_listed_and_resolves() -> None:
    out = run_python(
        """
        import importlib, json, sys, mosaic
        listed = dir(mosaic)
        resolved = {name: type(getattr(mosaic, name)).__name__ for name in mosaic.__all__}
        namespace = {}
        exec("from mosaic import *", namespace)
        origin = {n: getattr(mosaic, n).__module__ for n in mosaic._LAZY}
        lazy = mosaic._LAZY.items()
        same = all(getattr(importlib.import_module(m), n) is getattr(mosaic, n) for n, m in lazy)
        star = sorted(set(namespace) - {"__builtins__"})
        print(json.dumps({"dir": listed, "resolved": resolved, "star": star, "origin": origin, "same": same,
                          "has_nope": hasattr(mosaic, "nope")}))
        """
    )
    result = json.loads(out)
    public = set(mosaic.__all__)
    assert public <= set(result["dir"])
    assert set(result["star"]) == public
    assert set(result["resolved"]) == public
    assert result["resolved"]["load"] == "function" and result["resolved"]["TileIndex"] == "type"
    assert result["resolved"]["__version__"] == "str"
    assert (
        result["origin"]["TileIndex"] == "mosaic.index.tile_index"
        and result["origin"]["regrid"] == "mosaic.outputs.batch"
    )
    assert result["same"] is True
    assert (
        result["has_nope"] is False
    )  # an unknown name is an AttributeError, not an import attempt gone wrong


def test_a_submodule_is_reachable_as_an_attribute_after_import_mosaic() -> None:
    out = run_python("import mosaic; print(mosaic.synthetic.__name__, mosaic.api.load is mosaic.load)")
    assert out.split() == ["mosaic.synthetic", "True"]
    with pytest.raises(AttributeError, match="no attribute 'not_a_module'"):
        mosaic.not_a_module  # noqa: B018


def test_local_computes_do_not_import_distributed(tmp_path: Path) -> None:
    """An eager load and a regrid to a COG without a client run on threads, without importing distributed.

    (A regrid to Zarr still does: xarray's ``to_zarr(compute=False)`` makes a dask.delayed whose graph
    dask builds by trying ``distributed.shuffle``; see docs/performance.md, "Fixed costs".)
    """
    tests = Path(__file__).resolve().parent
    out = run_python(
        f"""
        import json, sys
        sys.path.insert(0, {str(tests)!r})
        import real_data
        import mosaic
        from rasterio.warp import transform_bounds
        import rasterio

        paths = real_data.fill_zero_scenes({str(tmp_path / "scenes")!r})
        with rasterio.open(paths[0]) as src:
            bbox = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        index = mosaic.TileIndex.from_files([str(p) for p in paths], progress=False)
        ds = mosaic.load(bbox, "EPSG:4326", index=index, chunks=None, src_nodata=0, groupby=None)
        eager = {{"numpy": type(ds.data.data).__name__, "valid": int((ds.data.values != 0).sum()),
                  "distributed": "distributed" in sys.modules}}
        report = mosaic.regrid({str(tmp_path / "out.tif")!r}, bbox, "EPSG:4326", index=index, src_nodata=0,
                               groupby=None, chunks=128, progress=False)
        print(json.dumps({{"eager": eager, "regions": report.written,
                           "distributed": "distributed" in sys.modules}}))
        """
    )
    result = json.loads(out)
    assert result["eager"]["numpy"] == "ndarray" and result["eager"]["valid"] > 0
    assert result["eager"]["distributed"] is False
    assert result["regions"] > 0
    assert result["distributed"] is False
