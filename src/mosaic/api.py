"""The public entry points: :func:`plan` and :func:`load`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor users expect)
import xarray as xr
from dask.base import tokenize
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from mosaic._progress import DaskTaskBar
from mosaic.auth import Profile, with_signer
from mosaic.errors import InvalidInputError
from mosaic.graph import band_array
from mosaic.io.limits import LimiterStats, get_limiter
from mosaic.io.paths import redact
from mosaic.io.runtime import failed_reads
from mosaic.masks import MaskSpec
from mosaic.planning.grid import DEFAULT_MAX_PIXELS
from mosaic.planning.planner import BandSpec, Plan, make_plan
from mosaic.types import BBox, TimeLike

__all__ = ["load", "plan", "read_stats", "to_dataset"]


plan = make_plan
"""Plan a mosaic without reading pixels: which scene windows feed which chunk (same arguments as
:func:`load`; returns an inspectable :class:`~mosaic.planning.planner.Plan`)."""


def load(
    bbox: BBox | Sequence[float] | None = None,
    crs: Any = None,
    time: TimeLike = None,
    *,
    index: Any = None,
    resolution: float | tuple[float, float] | None = None,
    shape: tuple[int, int] | None = None,
    geobox: GeoBox | None = None,
    like: Any = None,
    bbox_crs: Any = "EPSG:4326",
    geopolygon: Any = None,
    clip: bool = False,
    anchor: Any = None,
    bands: Sequence[str] | str | None = None,
    groupby: str | None = "solar_day",
    method: str | Callable[..., Any] = "first",
    resampling: str | Any | Mapping[str, Any] = "nearest",
    dtype: Any = None,
    nodata: Any = None,
    src_nodata: float | Mapping[str, float] | None = None,
    chunks: int | tuple[int, int] | Mapping[str, int] | None = 2048,
    max_concurrency: int | None = None,
    on_error: str = "raise",
    on_empty: str = "raise",
    gdal_options: Mapping[str, Any] | None = None,
    auth: Profile | Sequence[Profile] | None = None,
    sign: Callable[[str], str] | None = None,
    progress: bool = False,
    max_pixels: float | None = DEFAULT_MAX_PIXELS,
    mask: MaskSpec | str | None = None,
    mask_fraction: bool = False,
    filter: Any = None,
    sortby: Any = None,
) -> xr.Dataset:
    """Load a seamless mosaic of the scenes in ``index`` on one grid: lazy, or eager with ``chunks=None``.

    Args:
        bbox: (minx, miny, maxx, maxy) in ``bbox_crs``; in lon/lat, minx > maxx crosses the antimeridian.
            Or give ``geopolygon``.
        crs: target CRS (anything pyproj accepts) or ``"utm"`` for the zone of the bbox centre.
        time: a date or partial date (``"2024-06"``), ``"start/end"``, or a ``(start, end)`` pair.
        index: a TileIndex, the path of a saved index, or STAC Items (default: ``$MOSAIC_INDEX``).
        resolution: pixel size in target CRS units (default: the finest of the selected scenes).
        shape: (height, width) instead of a resolution.
        geobox: an odc-geo GeoBox for exact grid control.
        like: an xarray object whose grid to reuse.
        bbox_crs: CRS of ``bbox`` (and of a ``geopolygon`` that does not carry its own CRS).
        geopolygon: the area as a polygon instead of a bbox (odc-stac's name): a shapely geometry, a
            GeoJSON dict, or anything with ``__geo_interface__`` (a GeoDataFrame or odc-geo Geometry
            brings its own CRS). The grid covers its bounds.
        clip: with ``geopolygon``, set pixels whose centres lie outside the polygon to nodata (as
            ``rio.clip``), and read only the scenes and chunks under the polygon.
        anchor: where pixel edges fall, as odc-geo's ``anchor``: ``"edge"`` (default: on multiples of the
            resolution, like ``gdalwarp -tap``), ``"center"`` (pixel centres there), ``(fx, fy)`` pixel
            fractions, or ``"native"``: the phase of the selected scenes' own grid in the target CRS
            (their raw pixels, unresampled, at their resolution).
        bands: variables to load: asset names (all bands of a multi-band asset), ``asset.N``, or STAC
            common names (``red``, ``nir``: odc-stac's aliases; the variable keeps the name asked for).
        groupby: ``"solar_day"``, ``"time"``, an Item property name, or None (one layer for the period).
        method: ``first``, ``last``, ``min``, ``max``, ``mean``, ``median``, ``count``,
            ``highest:<band>``/``lowest:<band>``, or a callable from a (scenes, y, x) stack to (y, x).
        resampling: warp kernel (``nearest``, ``bilinear``, ``cubic``, ``average``, ...; any case, GDAL's
            spellings or a ``rasterio.enums.Resampling``), or a mapping from band to kernel with
            ``"*"`` for the rest (``{"*": "bilinear", "SCL": "nearest"}``).
        dtype: output dtype (one for all bands, or a mapping per band with ``"*"`` for the rest);
            default: the source dtype.
        nodata: output nodata (one, or a mapping per band); default: the source nodata, NaN for floats.
        src_nodata: the value that means "no data" in the source files, where they do not declare it
            (real Landsat Level-1 files use 0 without a nodata tag): one for every asset, or a mapping
            ``{asset: value}``. It replaces what the index and the files say.
        chunks: chunk size in pixels (int, (y, x) or {"y":, "x":}) of the lazy, dask-backed result;
            ``None`` loads eagerly: computed at once in this process's threads, NumPy-backed.
        max_concurrency: bound on simultaneous reads per process (default: 4 per core).
        on_error: ``"raise"`` on a failed read, or ``"skip"`` it with a warning.
        on_empty: ``"raise"`` (default) or ``"warn"`` when no scene matches the request.
        gdal_options: GDAL configuration options entered inside every read task (credential values,
            e.g. ``AWS_SECRET_ACCESS_KEY``, are hidden from reprs and plan output).
        auth: credential profiles (:mod:`mosaic.auth`) matched by href prefix; several at once.
        sign: a callable from href to signed href (as odc-stac's ``patch_url``, e.g.
            ``planetary_computer.sign``), called at read time: signed URLs never enter the index, the
            plan, GTI or exports.
        progress: show a progress bar of the eager load (``chunks=None``); a lazy result shows its
            progress when computed (``dask.diagnostics.ProgressBar``, or the distributed dashboard).
        max_pixels: the largest output grid, in pixels of one band and time step (height x width);
            default 10^11. A larger grid, or one whose pixels are over 100 times finer than the
            finest selected scene's (a resolution in the wrong units), raises
            :class:`~mosaic.errors.GridSizeError`; ``None`` lifts both checks.
        mask: a quality mask applied to each scene before fusion (:mod:`mosaic.masks`): a spec
            (``Classes("SCL", exclude=[3, 8, 9, 10])``, ``Bits("qa_pixel", bits=[1, 3, 4])``, ``Range``,
            combined with ``|`` and ``&``), a preset name (``"sentinel2-scl"``, ``"landsat-c2-qa"``) or
            an expression of them. The pixels it drops become no data, so ``first`` takes the next
            clear scene and ``median`` ignores the clouds.
        mask_fraction: with ``mask``, add a ``mask_fraction`` variable (float32): per pixel and time,
            the share of the scenes with data there (in the first band) that the mask drops; NaN
            where no scene has data.
        filter: only the scenes for which this CQL2 filter is true: text
            (``"eo:cloud_cover < 20 AND sat:orbit_state = 'descending'"``) or CQL2 JSON (a dict), on
            the Item properties the index holds and its own columns (``id``, ``collection``...); see
            :meth:`~mosaic.index.TileIndex.query`. A saved index reads only the row groups that can
            match.
        sortby: the order ``method="first"``/``"last"`` take the scenes of a time group in, as STAC
            API ``sortby``: ``"eo:cloud_cover"`` (least cloudy first; ``"-eo:cloud_cover"``: most
            cloudy first), ``["+datetime", "id"]``; ties, and the default, in datetime-then-id order.
            Scenes without a value of a field come after those with one.

    Raises:
        GridSizeError: the grid is larger than ``max_pixels``, or much finer than the scenes.
        IndexFormatError: the index file is missing, empty, truncated, or not a tile index.
        InvalidInputError: a malformed argument (every argument is checked before the index is read).
        NoDataError: no scene matches the request (with ``on_empty="raise"``).

    Returns:
        A Dataset with one (time, y, x) variable per band, pixel-centre coordinates, a ``spatial_ref``
        grid mapping readable by rioxarray and odc-geo, nodata set, and attrs describing the plan.
    """
    if progress and chunks is not None:
        raise InvalidInputError(
            "progress=True shows the progress of an eager load: pass chunks=None, or compute the lazy "
            "result inside `with dask.diagnostics.ProgressBar():`"
        )
    ds = to_dataset(
        make_plan(
            bbox,
            crs,
            time,
            index=index,
            resolution=resolution,
            shape=shape,
            geobox=geobox,
            like=like,
            bbox_crs=bbox_crs,
            geopolygon=geopolygon,
            clip=clip,
            anchor=anchor,
            bands=bands,
            groupby=groupby,
            method=method,
            resampling=resampling,
            dtype=dtype,
            nodata=nodata,
            src_nodata=src_nodata,
            chunks=chunks,
            max_concurrency=max_concurrency,
            on_error=on_error,
            on_empty=on_empty,
            gdal_options=gdal_options,
            auth=with_signer(auth, sign),
            max_pixels=max_pixels,
            mask=mask,
            mask_fraction=mask_fraction,
            filter=filter,
            sortby=sortby,
        )
    )
    if chunks is None:  # eager, as odc-stac: the same graph, computed here (2048-pixel tasks)
        with DaskTaskBar(desc="mosaic.load", unit="task") if progress else contextlib.nullcontext():
            ds = _computed(ds)
    return ds


def _computed(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its dask arrays computed: what ``ds.compute()`` gives, with less fixed cost.

    dask's threaded scheduler itself: the name "threads" would make dask import distributed (~0.2 s)
    only to look for a client that an eager load does not use. The arrays are computed by dask, not
    through ``Dataset.compute``, whose first call in a process looks for chunk managers among the
    installed packages' entry points (a scan of every distribution's metadata).
    """
    import dask.array as da
    import dask.threaded
    from dask.base import compute

    names = [name for name, var in ds.variables.items() if isinstance(var.data, da.Array)]
    arrays = (ds.variables[name].data for name in names)
    values = compute(*arrays, scheduler=dask.threaded.get)  # type: ignore[no-untyped-call]
    out = ds.copy(deep=False)
    for name, value in zip(names, values, strict=True):
        out.variables[name].data = value
    return out


def to_dataset(the_plan: Plan) -> xr.Dataset:
    """The lazy Dataset that executes ``the_plan``."""
    coords = xr_coords(the_plan.geobox, crs_coord_name="spatial_ref", dims=("y", "x"))
    coords["time"] = xr.DataArray(np.array(the_plan.times, dtype="datetime64[ns]"), dims=("time",))
    data_vars = {}
    plan_token = tokenize(the_plan)
    failures_key = f"mosaic-{plan_token}"
    for band in the_plan.bands:
        attrs: dict[str, Any] = {"asset": band.asset, "asset_band": band.band, "grid_mapping": "spatial_ref"}
        if band.nodata is not None:  # unmasked data: nodata in attrs (see docs/concepts.md, "Nodata")
            attrs["nodata"] = attrs["_FillValue"] = _nodata_value(band)
        if band.scale not in (None, 1.0):
            attrs["scale_factor"] = band.scale  # CF packing: physical = stored * scale_factor + add_offset
        if band.offset not in (None, 0.0):
            attrs["add_offset"] = band.offset
        if band.physical:
            attrs["units_note"] = "physical values: each scene's own scale/offset applied (they differ)"
        data = band_array(the_plan, band, failures_key, plan_token=plan_token)
        arr = xr.DataArray(data, dims=("time", "y", "x"), attrs=attrs)
        data_vars[band.name] = arr
    if the_plan.mask_fraction and the_plan.bands:
        from mosaic.io._mask_read import FRACTION, fraction_array

        fraction = fraction_array(the_plan, failures_key, plan_token=plan_token)
        data_vars[FRACTION] = xr.DataArray(
            fraction,
            dims=("time", "y", "x"),
            attrs={
                "grid_mapping": "spatial_ref",
                "long_name": "share of the scenes with data that the quality mask drops",
                "mask": repr(the_plan.mask),
            },
        )
    summary = the_plan.summary()
    attrs = {
        "index": redact(the_plan.index_source) if the_plan.index_source else "in-memory TileIndex",
        "method": summary["method"],
        "resampling": the_plan.resampling,
        "groups": list(the_plan.groups),
        "plan_summary": json.dumps(summary),
        "scenes": len(the_plan.scenes),
    }
    if the_plan.mask is not None:
        attrs["mask"] = repr(the_plan.mask)
    if the_plan.on_error == "skip":
        attrs["failed_reads"] = failed_reads(failures_key)  # live: filled as the load computes
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _nodata_value(band: BandSpec) -> float | int:
    """The band's nodata as a number of its kind: an int for an integer band (if whole), else a float."""
    value = float(cast(float, band.nodata))
    return int(value) if np.dtype(band.dtype).kind in "iu" and value.is_integer() else value


def read_stats(max_concurrency: int | None = None) -> LimiterStats:
    """Counters of this process's read limiter: reads, peak in flight, retries, failures."""
    from mosaic.planning.planner import check_concurrency

    return get_limiter(check_concurrency(max_concurrency)).stats()
