"""The demo job: a lon/lat mosaic across a UTM zone seam, checked against a known analytic truth.

:func:`run_demo` (and ``mosaic demo``, which ``make demo`` runs) works offline:

1. generate the embedded synthetic collection (:func:`mosaic.synthetic.demo_collection`: 19 scenes in
   7 CRSs, reused when already on disk);
2. index its STAC Items (:meth:`TileIndex.from_stac`) and save the index as GeoParquet;
3. plan a mosaic of the scenes straddling the 12E seam between UTM 32N and 33N, in EPSG:4326 at
   0.0002 deg (~16 x 22 m), for bands B02 (uint16, 20 m) and B8A (int16, 40 m), and draw the plan;
4. load it, write it to Zarr (readable back with rioxarray) and draw a quick-look PNG;
5. compare every valid output pixel with the truth at its centre (the field the synthetic scenes were
   sampled from, with the scenes' acquisition-day time term) and report the errors;
6. export B02 as a GDAL GTI (:func:`mosaic.export_gti`), read it back with GDAL and report how much
   of it GDAL reads exactly as the mosaic.

The figures come back as a :class:`DemoReport`, whose :meth:`DemoReport.format` is what is printed.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pystac
    import xarray as xr

    from mosaic.index.tile_index import TileIndex
    from mosaic.planning.planner import Plan

__all__ = [
    "DEMO_BANDS",
    "DEMO_BBOX",
    "DEMO_CRS",
    "DEMO_RESOLUTION",
    "DEMO_TIME",
    "SEAM_LON",
    "BandError",
    "DemoReport",
    "demo_index",
    "run_demo",
]

DEMO_BBOX = (11.88, 45.40, 12.12, 45.58)
"""The area (lon/lat): the two scenes on either side of the 12E seam between UTM zones 32 and 33."""
DEMO_CRS = "EPSG:4326"
DEMO_RESOLUTION = 0.0002  # degrees: ~16 m east-west, ~22 m north-south at 45.5N
DEMO_TIME = "2024-06-01"
DEMO_BANDS = ("B02", "B8A")
DEMO_CHUNKS = 512
SEAM_LON = 12.0


@dataclass(frozen=True)
class BandError:
    """How far one output band is from the truth, over its valid pixels.

    Attributes:
        band: output variable name.
        max_abs_error: largest |output - truth| in physical units.
        mean_abs_error: mean |output - truth|.
        valid_pixels: pixels holding data (not nodata).
        pixels: all pixels of the band (all times).
        source_tolerance: the largest error a source pixel itself has at its own centre (noise plus
            half a quantum); resampling to other pixel centres adds the field's change in between.
    """

    band: str
    max_abs_error: float
    mean_abs_error: float
    valid_pixels: int
    pixels: int
    source_tolerance: float

    @property
    def valid_fraction(self) -> float:
        """Share of the output pixels that hold data."""
        return self.valid_pixels / self.pixels if self.pixels else 0.0


@dataclass(frozen=True)
class DemoReport:
    """What the demo did, how well, how fast, and where its outputs are.

    Attributes:
        out_dir: the output folder.
        collection_dir: the synthetic collection (COGs, STAC Items, ``items.json``).
        index_path: the tile index (GeoParquet).
        zarr_path: the mosaic (Zarr).
        quicklook_path: the mosaic with the scene footprints drawn over it (PNG).
        plan_path: the plan picture (PNG, :meth:`mosaic.Plan.plot`).
        collection_scenes: scenes in the collection.
        collection_assets: rows (scene assets) in the index.
        collection_crs: (CRS, rows) pairs, most rows first.
        bbox, crs, resolution, time, bands: the request.
        shape: output (time, y, x).
        scenes_used: scenes the plan reads.
        source_crs: CRSs of those scenes.
        planned_reads: reads in the plan.
        reads: reads done while loading (:func:`mosaic.read_stats`).
        errors: accuracy of each band.
        zarr_crs: the CRS rioxarray reads back from the Zarr store.
        timings: (step, seconds) pairs.
        seconds: total wall time.
        gti_path: the GDAL GTI export of the request's first band (:func:`mosaic.export_gti`), which
            GDAL and QGIS open as the same mosaic; None if it was not produced.
        gti_identical: share of the pixels valid in both that GDAL reads from ``gti_path`` exactly as
            in the Zarr mosaic (None without a GTI).
    """

    out_dir: Path
    collection_dir: Path
    index_path: Path
    zarr_path: Path
    quicklook_path: Path
    plan_path: Path
    collection_scenes: int
    collection_assets: int
    collection_crs: tuple[tuple[str, int], ...]
    bbox: tuple[float, float, float, float]
    crs: str
    resolution: float
    time: str
    bands: tuple[str, ...]
    shape: tuple[int, int, int]
    scenes_used: tuple[str, ...]
    source_crs: tuple[str, ...]
    planned_reads: int
    reads: int
    errors: tuple[BandError, ...]
    zarr_crs: str
    timings: tuple[tuple[str, float], ...]
    seconds: float
    gti_path: Path | None = field(default=None)
    gti_identical: float | None = field(default=None)

    @property
    def max_abs_error(self) -> float:
        """Largest error over all bands."""
        return max(e.max_abs_error for e in self.errors)

    @property
    def mean_abs_error(self) -> float:
        """Mean error over the valid pixels of all bands."""
        total = sum(e.valid_pixels for e in self.errors)
        return sum(e.mean_abs_error * e.valid_pixels for e in self.errors) / total if total else math.nan

    @property
    def valid_fraction(self) -> float:
        """Share of output pixels holding data (over all bands)."""
        total = sum(e.pixels for e in self.errors)
        return sum(e.valid_pixels for e in self.errors) / total if total else 0.0

    def format(self) -> str:
        """The report as printed by ``mosaic demo``."""
        crs_list = ", ".join(f"{crs} ({n})" for crs, n in self.collection_crs)
        steps = ", ".join(f"{name} {sec:.1f} s" for name, sec in self.timings)
        lines = [
            f"mosaic demo: a mosaic in {self.crs} across the UTM 32N/33N seam at {SEAM_LON:g}E",
            f"collection      {self.collection_scenes} scenes ({self.collection_assets} assets) "
            f"in {len(self.collection_crs)} CRSs: {crs_list}",
            f"request         bbox {self.bbox} lon/lat, {self.crs} at {self.resolution:g}, "
            f"time {self.time}, bands {', '.join(self.bands)}",
            f"scenes used     {len(self.scenes_used)} from {len(self.source_crs)} CRSs "
            f"({', '.join(self.source_crs)}): {', '.join(self.scenes_used)}",
            f"reads           {self.reads} done ({self.planned_reads} planned)",
            "output          {} x {} x {} (time, y, x)".format(*self.shape),
            "accuracy        against the known field at every output pixel centre (valid pixels only)",
            *(
                f"  {e.band:<6}        max abs error {e.max_abs_error:.2f}, mean abs error "
                f"{e.mean_abs_error:.2f}, valid {100 * e.valid_fraction:.1f}% "
                f"(a source pixel at its own centre: <= {e.source_tolerance:.2f})"
                for e in self.errors
            ),
            f"max abs error   {self.max_abs_error:.2f}",
            f"mean abs error  {self.mean_abs_error:.2f}",
            f"valid fraction  {self.valid_fraction:.3f}",
            f"time taken      {self.seconds:.1f} s ({steps})",
            "outputs",
            f"  collection    {self.collection_dir} (items.json and one folder of COGs per scene)",
            f"  index         {self.index_path}",
            f"  mosaic        {self.zarr_path} (Zarr; CRS read back by rioxarray: {self.zarr_crs})",
            f"  quick-look    {self.quicklook_path}",
            f"  plan          {self.plan_path}",
            "  GTI export    "
            + (
                f"{self.gti_path} (GDAL reads {100 * (self.gti_identical or 0):.2f}% of the valid pixels "
                "as in the mosaic)"
                if self.gti_path
                else "not produced"
            ),
        ]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ steps


def _zarr_ready(ds: xr.Dataset) -> xr.Dataset:
    """A copy whose attributes are plain strings and numbers (lists become JSON) and no object dtypes."""
    ds = ds.copy()

    def plain(attrs: dict[str, Any]) -> dict[str, Any]:
        return {
            k: v if isinstance(v, str | int | float | bool | np.number) else json.dumps(v)
            for k, v in attrs.items()
        }

    ds.attrs = plain(ds.attrs)
    for name in ds.variables:
        ds[name].attrs = plain(ds[name].attrs)
        if ds[name].dtype == object:
            raise TypeError(f"variable {name!r} has an object dtype; it would not write to Zarr cleanly")
    return ds


def _write_zarr(ds: xr.Dataset, path: Path) -> str:
    """Write ``ds`` to a fresh Zarr store at ``path``; returns the CRS rioxarray reads back."""
    import rioxarray  # noqa: F401  (the .rio accessor)
    import xarray as xr

    if path.exists():
        shutil.rmtree(path)
    with warnings.catch_warnings():
        # Zarr 3 says consolidated metadata is not in the v3 spec yet; xarray writes it for fast opens.
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        _zarr_ready(ds).to_zarr(path, mode="w")
        with xr.open_zarr(path, decode_coords="all") as back:
            crs = back.rio.crs
    if crs is None:
        raise RuntimeError(f"{path}: rioxarray finds no CRS in the Zarr store just written")
    return str(crs)


def _crs_wkt(the_plan: Plan) -> str:
    """WKT of the plan's output CRS (a plan always has one)."""
    crs = the_plan.geobox.crs
    if crs is None:
        raise RuntimeError("the plan's output grid has no CRS")
    return str(crs.to_wkt())


def _pixel_lonlat(the_plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat of every output pixel centre."""
    from pyproj import Transformer

    gbox = the_plan.geobox
    ny, nx = gbox.shape
    aff = gbox.affine
    cols, rows = np.meshgrid(np.arange(nx) + 0.5, np.arange(ny) + 0.5)
    x = aff.a * cols + aff.b * rows + aff.c
    y = aff.d * cols + aff.e * rows + aff.f
    tr = Transformer.from_crs(_crs_wkt(the_plan), "EPSG:4326", always_xy=True)
    lon, lat = tr.transform(x, y)
    return np.asarray(lon), np.asarray(lat)


def _accuracy(ds: xr.Dataset, the_plan: Plan, items: dict[str, pystac.Item]) -> tuple[BandError, ...]:
    """Per band: |output - truth| over valid pixels, truth taken at each output pixel centre."""
    from mosaic import synthetic

    lon, lat = _pixel_lonlat(the_plan)
    out = []
    for spec in the_plan.bands:
        errors: list[np.ndarray] = []
        pixels = 0
        tolerance = 0.0
        for t in range(len(the_plan.times)):
            scenes = sorted({r.scene for task in the_plan.tasks if task.time == t for r in task.reads})
            terms = {synthetic.time_term(items[s].datetime) for s in scenes}
            if len(terms) > 1:  # the truth differs per scene; the demo request avoids this on purpose
                raise RuntimeError(f"time group {the_plan.groups[t]} mixes acquisition days: {scenes}")
            stored = np.asarray(ds[spec.name].isel(time=t).values, dtype="float64")
            pixels += stored.size
            valid = ~np.isnan(stored)
            if spec.nodata is not None and not math.isnan(spec.nodata):
                valid &= stored != spec.nodata
            if not scenes or not valid.any():
                continue
            item = items[scenes[0]]
            physical = stored[valid] * (spec.scale or 1.0) + (spec.offset or 0.0)
            expected = synthetic.expected_value(item, spec.asset, lon[valid], lat[valid], spec.band)
            errors.append(np.abs(physical - expected))
            tolerance = max(tolerance, synthetic.tolerance(item, spec.asset, spec.band))
        err = np.concatenate(errors) if errors else np.empty(0)
        out.append(
            BandError(
                band=spec.name,
                max_abs_error=float(err.max()) if err.size else math.nan,
                mean_abs_error=float(err.mean()) if err.size else math.nan,
                valid_pixels=int(err.size),
                pixels=pixels,
                source_tolerance=float(tolerance),
            )
        )
    return tuple(out)


def _gti(ds: xr.Dataset, path: Path, idx: TileIndex) -> tuple[Path, float]:
    """Export the request's first band as a GTI, read it with GDAL, and compare it with ``ds``."""
    import rasterio

    from mosaic.outputs.gti import export_gti

    band = DEMO_BANDS[0]
    (written,) = export_gti(
        idx, path, crs=DEMO_CRS, resolution=DEMO_RESOLUTION, bbox=DEMO_BBOX, time=DEMO_TIME, bands=band
    )
    with rasterio.open(written) as gdal:
        pixels, nodata = gdal.read(1), gdal.nodata
    ours = np.asarray(ds[band].isel(time=0).values)
    both = (pixels != nodata) & (ours != nodata)
    return written, float((pixels[both] == ours[both]).mean()) if both.any() else math.nan


def _quicklook(ds: xr.Dataset, the_plan: Plan, band: str, path: Path) -> Path:
    """The first time step of ``band`` with the footprints of the scenes it reads drawn over it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from pyproj import Transformer

    from mosaic.index.geom import lonlat_to_crs

    gbox = the_plan.geobox
    spec = the_plan.band(band)
    values = np.asarray(ds[band].isel(time=0).values, dtype="float64")
    if spec.nodata is not None and not math.isnan(spec.nodata):
        values[values == spec.nodata] = np.nan
    values = values * (spec.scale or 1.0) + (spec.offset or 0.0)
    minx, miny, maxx, maxy = gbox.boundingbox
    crs_wkt = _crs_wkt(the_plan)

    fig = Figure(figsize=(10, 7.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    image = ax.imshow(
        values, extent=(minx, maxx, miny, maxy), origin="upper", cmap="viridis", vmin=lo, vmax=hi
    )
    ax.set_facecolor("0.85")  # nodata shows as light grey
    fig.colorbar(image, ax=ax, shrink=0.8, label=f"{band} (physical value)")

    used = set(the_plan.scenes)
    colours = ("tab:red", "tab:orange", "tab:cyan", "tab:pink", "white", "tab:olive")
    seen: dict[str, Any] = {}
    for rec in the_plan.considered:
        if rec.id in seen or rec.id not in used:
            continue
        seen[rec.id] = rec
        fp = lonlat_to_crs(rec.footprint, crs_wkt)
        colour = colours[(len(seen) - 1) % len(colours)]
        for i, part in enumerate(getattr(fp, "geoms", [fp])):
            x, y = part.exterior.xy
            ax.plot(x, y, color=colour, linewidth=2, label=f"{rec.id} ({rec.crs})" if i == 0 else None)
    lats = np.linspace(-80.0, 84.0, 821)
    sx, sy = Transformer.from_crs("EPSG:4326", crs_wkt, always_xy=True).transform(
        np.full_like(lats, SEAM_LON), lats
    )
    ax.plot(sx, sy, color="black", linestyle="--", linewidth=1.2, label=f"UTM zone seam ({SEAM_LON:g}E)")
    ax.set_xlim(minx, maxx)
    ax.set_ylim(miny, maxy)
    if gbox.crs is not None and gbox.crs.geographic:
        ax.set_aspect(1.0 / math.cos(math.radians((miny + maxy) / 2)))
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
    else:
        ax.set_aspect("equal")
    when = ", ".join(the_plan.groups)
    ax.set_title(
        f"{band} mosaic in {gbox.crs} on {when}: {len(seen)} scenes, footprints outlined", fontsize=10
    )
    ax.legend(loc="lower right", fontsize=8, framealpha=0.85)
    fig.savefig(path, bbox_inches="tight")
    return path


# -------------------------------------------------------------------------------------------- run


def demo_index(folder: str | Path) -> Path:
    """The demo collection in ``folder/collection`` and its tile index, ``folder/index.parquet``.

    Offline data to try mosaic on (what the notebooks use when ``MOSAIC_INDEX`` is not set): generated
    the first time (a few seconds), reused after. Returns the index's path.
    """
    from mosaic import synthetic
    from mosaic.index.tile_index import TileIndex

    folder = Path(folder)
    path = folder / "index.parquet"
    if not path.exists():
        items = synthetic.demo_collection(folder / "collection")
        TileIndex.from_stac(items).write(path)
    return path


def run_demo(out_dir: str | Path, *, quiet: bool = False) -> DemoReport:
    """Run the demo into ``out_dir`` and return its report (printed as well unless ``quiet``).

    Args:
        out_dir: folder for the collection, index, Zarr mosaic and pictures (created if needed; the
            collection in it is reused when up to date, the other outputs are replaced).
        quiet: print nothing (neither progress nor the report).

    Returns:
        The :class:`DemoReport`.
    """
    import mosaic
    from mosaic import synthetic
    from mosaic.api import to_dataset
    from mosaic.index.tile_index import TileIndex

    say: Callable[[str], None] = (lambda _: None) if quiet else (lambda text: print(text, flush=True))
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "collection": out / "collection",
        "index": out / "index.parquet",
        "zarr": out / "mosaic.zarr",
        "quicklook": out / "quicklook.png",
        "plan": out / "plan.png",
        "gti": out / "mosaic.gti.gpkg",
    }
    timings: list[tuple[str, float]] = []
    start = clock = time.perf_counter()

    def lap(name: str) -> float:
        nonlocal clock
        now = time.perf_counter()
        timings.append((name, now - clock))
        clock = now
        return timings[-1][1]

    say(f"[1/7] generating the synthetic collection in {paths['collection']} ...")
    items = {item.id: item for item in synthetic.demo_collection(paths["collection"])}
    say(f"      {len(items)} scenes ({lap('collection'):.1f} s)")

    say("[2/7] indexing its STAC Items ...")
    idx = TileIndex.from_stac(paths["collection"] / "items.json")
    idx.write(paths["index"])
    crs_counts = idx.crs_counts()
    say(f"      {len(idx)} assets in {len(crs_counts)} CRSs -> {paths['index']} ({lap('index'):.1f} s)")

    say(f"[3/7] planning {DEMO_CRS} at {DEMO_RESOLUTION:g} over {DEMO_BBOX} on {DEMO_TIME} ...")
    the_plan = mosaic.plan(
        DEMO_BBOX,
        DEMO_CRS,
        DEMO_TIME,
        index=paths["index"],
        resolution=DEMO_RESOLUTION,
        bands=list(DEMO_BANDS),
        chunks=DEMO_CHUNKS,
    )
    the_plan.plot(paths["plan"])
    summary = the_plan.summary()
    say(
        f"      {summary['scenes']} scenes, {summary['reads']} reads, {summary['nonempty_chunks']} chunks "
        f"({lap('plan'):.1f} s)"
    )

    say("[4/7] loading the mosaic ...")
    before = mosaic.read_stats().reads
    ds = to_dataset(the_plan).load()
    reads = mosaic.read_stats().reads - before
    say(f"      {reads} reads ({lap('load'):.1f} s)")

    say(f"[5/7] writing {paths['zarr']} and {paths['quicklook']} ...")
    zarr_crs = _write_zarr(ds, paths["zarr"])
    _quicklook(ds, the_plan, DEMO_BANDS[0], paths["quicklook"])
    say(f"      done ({lap('write'):.1f} s)")

    say("[6/7] comparing with the known field ...")
    errors = _accuracy(ds, the_plan, items)
    lap("check")

    say(f"[7/7] exporting a GDAL GTI of {DEMO_BANDS[0]} to {paths['gti']} and reading it with GDAL ...")
    gti_path, gti_identical = _gti(ds, paths["gti"], idx)
    say(f"      {100 * gti_identical:.2f}% of the valid pixels as in the mosaic ({lap('gti'):.1f} s)")

    report = DemoReport(
        out_dir=out,
        collection_dir=paths["collection"],
        index_path=paths["index"],
        zarr_path=paths["zarr"],
        quicklook_path=paths["quicklook"],
        plan_path=paths["plan"],
        collection_scenes=len(items),
        collection_assets=len(idx),
        collection_crs=tuple(crs_counts.items()),
        bbox=DEMO_BBOX,
        crs=DEMO_CRS,
        resolution=DEMO_RESOLUTION,
        time=DEMO_TIME,
        bands=DEMO_BANDS,
        shape=(int(summary["shape"][0]), int(summary["shape"][1]), int(summary["shape"][2])),
        scenes_used=tuple(the_plan.scenes),
        source_crs=tuple(summary["source_crs"]),
        planned_reads=int(summary["reads"]),
        reads=int(reads),
        errors=errors,
        zarr_crs=zarr_crs,
        timings=tuple(timings),
        seconds=time.perf_counter() - start,
        gti_path=gti_path,
        gti_identical=gti_identical,
    )
    say("")
    say(report.format())
    say(f"\nSee the collection on a map: mosaic serve --index {paths['index']} --bands B02")
    return report
