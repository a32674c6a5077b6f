"""The engines compared by ``load_compare.py``: each loads the same Items onto the same GeoBox.

Every runner takes the Items (plain dicts, sorted by datetime then id), the target ``GeoBox``, the asset
name and the number of dask threads, and returns ``{"timed": f, "after": g}``: ``f()`` loads, computes
and returns the (y, x) ``uint16`` mosaic (nodata 0) with its output grid; ``g()`` tells what it can
about the run. Only ``f()`` is timed; what an engine needs beforehand and a user would do once (parse
Items, build an index) is timed separately and reported beside it.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox

CHUNK = 2048  # pixels a side, for every dask engine (mosaic's default)


def grid_from_geobox(gbox: GeoBox) -> dict[str, Any]:
    return {
        "shape": [int(v) for v in gbox.shape],
        "transform": [float(v) for v in tuple(gbox.affine)[:6]],
        "crs": crs_name(gbox.crs),
    }


def crs_name(crs: Any) -> str:
    """``EPSG:n`` when the CRS has an EPSG code, else its WKT."""
    epsg = crs.epsg
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


def _dask_threads(threads: int) -> Any:
    import dask

    return dask.config.set(scheduler="threads", num_workers=threads)


# ---------------------------------------------------------------------------------------------- mosaic


def import_mosaic_engine() -> None:
    """Import what ``mosaic.load(...).compute()`` runs, as ``import odc.stac`` imports all of odc-stac.

    ``import mosaic`` imports nothing heavy (its public names resolve on first use), so without this the
    "compute" figure would include importing xarray, rioxarray and dask.array (~0.2 s); the fresh-process
    figure includes every import either way.
    """
    import mosaic.api
    import mosaic.fuse
    import mosaic.io.read  # noqa: F401


def mosaic_engine(items: Sequence[dict[str, Any]], gbox: GeoBox, asset: str, threads: int) -> dict[str, Any]:
    """mosaic.load(geobox=...).compute(); the TileIndex is built (and timed) beforehand."""
    import mosaic
    from mosaic.index import TileIndex

    import_mosaic_engine()

    t0 = time.perf_counter()
    index = TileIndex.from_stac(list(items), assets=[asset])
    index_s = time.perf_counter() - t0
    kwargs = dict(
        index=index,
        geobox=gbox,
        bands=[asset],
        groupby="solar_day",
        method="first",
        resampling="nearest",
        chunks=CHUNK,
    )

    def timed() -> tuple[np.ndarray, dict[str, Any]]:
        with _dask_threads(threads):
            ds = mosaic.load(**kwargs).compute()
        return np.asarray(ds[asset].values[0]), grid_from_geobox(ds.odc.geobox)

    def after() -> dict[str, Any]:
        t0 = time.perf_counter()
        plan = mosaic.plan(**kwargs)
        plan_s = time.perf_counter() - t0
        stats = mosaic.read_stats()
        return {
            "index_s": index_s,
            "plan_s": plan_s,
            "plan": plan.summary(),
            "reads_done": stats.reads,
            "note": "overviews: planner picks the level per chunk (decimated read, GDAL picks the IFD)",
        }

    return {"timed": timed, "after": after}


# ------------------------------------------------------------------------------------------- odc-stac


def odc_engine(items: Sequence[dict[str, Any]], gbox: GeoBox, asset: str, threads: int) -> dict[str, Any]:
    """odc.stac.load(items, geobox=..., chunks=...).compute()."""
    import odc.stac
    import pystac

    t0 = time.perf_counter()
    pitems = [pystac.Item.from_dict(copy.deepcopy(d)) for d in items]
    parse_s = time.perf_counter() - t0

    def timed() -> tuple[np.ndarray, dict[str, Any]]:
        with _dask_threads(threads):
            ds = odc.stac.load(
                pitems,
                bands=[asset],
                geobox=gbox,
                groupby="solar_day",
                resampling="nearest",
                chunks={"x": CHUNK, "y": CHUNK},
                fail_on_error=True,
            ).compute()
        if ds.sizes["time"] != 1:
            raise RuntimeError(f"odc-stac made {ds.sizes['time']} time groups, expected 1")
        return np.asarray(ds[asset].values[0]), grid_from_geobox(ds.odc.geobox)

    def after() -> dict[str, Any]:
        return {"parse_s": parse_s, "note": "overviews: reads the overview level closest to the output scale"}

    return {"timed": timed, "after": after}


# ------------------------------------------------------------------------------------------ stackstac


def stackstac_engine(
    items: Sequence[dict[str, Any]], gbox: GeoBox, asset: str, threads: int
) -> dict[str, Any]:
    """stackstac.stack(epsg, resolution, bounds) + stackstac.mosaic (first on top), .compute().

    stackstac 0.5 reads only ``proj:epsg`` (projection extension v1); the Items carry ``proj:code``
    (v2), so a copy with ``proj:epsg`` added is given to it (untimed), else it would lose the per-asset
    bounds it uses to skip chunks an asset does not touch.
    """
    import stackstac
    from rasterio.enums import Resampling

    prepared = []
    for d in items:
        d = copy.deepcopy(d)
        code = d["properties"].get("proj:code")
        if code and code.upper().startswith("EPSG:"):
            d["properties"]["proj:epsg"] = int(code.split(":")[1])
        prepared.append(d)
    epsg = gbox.crs.epsg
    if epsg is None:
        raise RuntimeError("stackstac needs an EPSG code for the output CRS")
    res = float(gbox.resolution.x)
    left, bottom, right, top = gbox.boundingbox

    def timed() -> tuple[np.ndarray, dict[str, Any]]:
        with _dask_threads(threads):
            stack = stackstac.stack(
                prepared,
                assets=[asset],
                epsg=int(epsg),
                resolution=res,
                bounds=(left, bottom, right, top),
                snap_bounds=True,
                resampling=Resampling.nearest,
                chunksize=CHUNK,
                dtype=np.dtype("uint16"),
                fill_value=np.uint16(0),  # a NumPy scalar: stackstac 0.5 + NumPy 2 reject int 0
                rescale=False,
                sortby_date="asc",
                xy_coords="center",
            )
            out = stackstac.mosaic(stack, dim="time", reverse=True, nodata=0).compute()
        x, y = out["x"].values, out["y"].values
        a, e = float(x[1] - x[0]), float(y[1] - y[0])
        grid = {
            "shape": [int(y.size), int(x.size)],
            "transform": [a, 0.0, float(x[0]) - a / 2, 0.0, e, float(y[0]) - e / 2],
            "crs": f"EPSG:{int(out.attrs.get('epsg', epsg))}",
        }
        return np.asarray(out.values).reshape(y.size, x.size), grid

    def after() -> dict[str, Any]:
        return {"note": "overviews: none (a WarpedVRT of the full-resolution file at the output grid)"}

    return {"timed": timed, "after": after}


ENGINES: dict[str, Callable[..., dict[str, Any]]] = {
    "mosaic": mosaic_engine,
    "odc-stac": odc_engine,
    "stackstac": stackstac_engine,
}


# ------------------------------------------------------------------------------------------- gdalwarp


def gdalwarp_command(
    items: Sequence[dict[str, Any]],
    gbox: GeoBox,
    asset: str,
    out: Path,
    *,
    multi: bool,
    threads: str = "2",
) -> list[str]:
    """The gdalwarp command for the same grid; inputs in reverse fusion order (gdalwarp: last wins).

    With ``multi``, ``-multi -wo NUM_THREADS=<threads>`` (``ALL_CPUS`` is GDAL's all cores).
    """
    left, bottom, right, top = gbox.boundingbox
    res_x, res_y = abs(float(gbox.resolution.x)), abs(float(gbox.resolution.y))
    hrefs = [d["assets"][asset]["href"] for d in items]
    cmd = ["gdalwarp", "-q", "-overwrite", "-of", "GTiff", "-ot", "UInt16"]
    cmd += ["-t_srs", gbox.crs.to_wkt() if gbox.crs.epsg is None else f"EPSG:{gbox.crs.epsg}"]
    cmd += ["-te", *(repr(float(v)) for v in (left, bottom, right, top)), "-tr", repr(res_x), repr(res_y)]
    cmd += ["-r", "near", "-srcnodata", "0", "-dstnodata", "0"]
    if multi:
        cmd += ["-multi", "-wo", f"NUM_THREADS={threads}"]
    cmd += [*reversed(hrefs), str(out)]
    return cmd


def run_gdalwarp(cmd: list[str]) -> float:
    """Wall time of one gdalwarp run (a fresh process by nature; includes writing the GeoTIFF)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"gdalwarp failed ({shlex.join(cmd[:12])} ...): {proc.stderr.strip()}")
    return elapsed


def write_uint16_cog(
    path: Path, data: np.ndarray, crs: str, transform: Any, *, tile: int, overviews: int
) -> None:
    """Write ``data`` (uint16, nodata 0) as the benchmarks' COG: DEFLATE + predictor 2, ``tile``-pixel
    blocks, ``overviews`` averaged overviews; through a temporary name, so a killed run leaves no
    partial file a later run would reuse."""
    import rasterio.shutil
    from rasterio.io import MemoryFile

    height, width = data.shape
    profile = dict(driver="GTiff", count=1, height=height, width=width, dtype="uint16", crs=crs)
    tmp = path.with_suffix(".tmp")
    with MemoryFile() as mem, mem.open(**profile, transform=transform, nodata=0) as ds:
        ds.write(data, 1)
        rasterio.shutil.copy(
            ds,
            tmp,
            driver="COG",
            compress="DEFLATE",
            predictor="2",
            blocksize=tile,
            overview_resampling="average",
            overview_count=overviews,
            bigtiff="NO",
        )
    os.replace(tmp, path)


def uint16_cog_item(
    item_id: str,
    path: Path,
    asset: str,
    *,
    crs: str,
    when: str,
    footprint: Any,
    transform: Any,
    bounds: Sequence[float],
    shape: tuple[int, int],
    res: float,
) -> dict[str, Any]:
    """The STAC Item (projection v2 + raster extensions) of one ``write_uint16_cog`` file (nodata 0)."""
    from shapely.geometry import mapping

    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        "id": item_id,
        "geometry": json.loads(json.dumps(mapping(footprint))),
        "bbox": list(footprint.bounds),
        "properties": {"datetime": when, "proj:code": crs},
        "links": [],
        "assets": {
            asset: {
                "href": str(path),
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "proj:shape": list(shape),
                "proj:transform": list(transform)[:6],
                "proj:bbox": list(bounds),
                "raster:bands": [{"data_type": "uint16", "nodata": 0, "spatial_resolution": res}],
            }
        },
    }


class IndexReadReports(logging.Handler):
    """The read reports (``ReadReport``) the ``mosaic.index`` logger gives, one per index read."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reports: list[Any] = []

    def emit(self, record: logging.LogRecord) -> None:
        report = getattr(record, "index_read", None)
        if report is not None:
            self.reports.append(report)


def collect_index_reads() -> IndexReadReports:
    """Attach a collector of index read reports to the ``mosaic.index`` logger (at DEBUG)."""
    handler = IndexReadReports()
    logger = logging.getLogger("mosaic.index")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return handler


# ------------------------------------------------------------------------- a timed worker process


def run_ready_worker(
    cmd: Sequence[str], what: str, *, before_go: Callable[[], None] | None = None, timeout: float = 1800
) -> dict[str, Any]:
    """Run a benchmark worker in a fresh process and return the JSON of its ``RESULT `` line.

    The worker sets up (imports, Items, index), prints ``READY`` and waits for ``GO`` on its stdin;
    ``before_go`` runs in between (zeroing a server's counters), so only the timed part is counted.
    The worker finds ``src`` and ``tests`` on its ``PYTHONPATH``.
    """
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root / "tests")])}
    proc = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdin is not None and proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "READY":
        proc.kill()
        raise RuntimeError(f"{what}: the worker did not get ready: {line!r}")
    if before_go is not None:
        before_go()
    proc.stdin.write("GO\n")
    proc.stdin.flush()
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: the worker failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
    return result
