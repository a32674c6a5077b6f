"""The virtual store (mosaic.export_virtual, ``mosaic tree export``): Zarr chunks that are the COGs' tiles.

Every store is read back in a fresh interpreter that never imports mosaic (plain xarray + zarr + fsspec
+ imagecodecs, with the ``.open.json`` written beside the store) and compared, band by band and time
step by time step, with rasterio's reads of the files, byte for byte.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.transform import from_origin
from rasterio.windows import Window

import mosaic
from mosaic import TileIndex, VirtualStoreError
from mosaic.cli import cli
from mosaic.errors import InvalidInputError, MissingExtraError, NoDataError
from mosaic.planning.records import SceneAsset
from real_data import DEM, L7, fill_zero_scenes, sentinel2_b01_items

pytest.importorskip("imagecodecs")  # the readers' codecs (the `virtual` extra)

PATTERN = r"(?P<id>[^/]+)/(?P<asset>[^/.]+)\.tif$"

READBACK = textwrap.dedent(
    r"""
    import io, json, sys
    import numpy as np
    import rasterio
    import xarray as xr
    import imagecodecs.numcodecs
    import rioxarray  # noqa: F401  (the .rio accessor)
    import odc.geo.xr  # noqa: F401  (the .odc accessor)

    imagecodecs.numcodecs.register_codecs()
    with open(sys.argv[1]) as f:
        kwargs = json.load(f)
    options = json.loads(sys.argv[2])
    if options.get("prefix"):  # tiles over plain HTTP from the test server, through obstore's fsspec
        import obstore.fsspec

        obstore.fsspec.register("http", asynchronous=True)
        kwargs["storage_options"]["remote_options"]["client_options"] = {"allow_http": True}
    tree = xr.open_datatree(**kwargs)
    summary = {"groups": {}, "compared": 0, "missing_chunks": 0}
    for node in tree.subtree:
        if not node.data_vars:
            continue
        ds = node.to_dataset()
        group = summary["groups"][node.path] = {
            "ids": [str(i) for i in ds["scene_id"].values],
            "footprints": [str(f) for f in ds["footprint"].values],
            "grid": [ds.attrs["transform"], ds.attrs["shape"]],
            "times": [str(t) for t in ds["time"].values],
            "vars": {},
        }
        for name, var in ds.data_vars.items():
            values = var.values
            for t, href in enumerate(ds[f"{name}_href"].values):
                if not href:
                    continue
                if options.get("prefix"):
                    href = str(href).replace(options["prefix"], options["root"])
                with rasterio.open(str(href)) as src:
                    if var.ndim == 4:
                        expected = np.moveaxis(src.read(), 0, -1)
                    else:
                        expected = src.read(var.attrs["band_in_file"])
                    got = values[t]
                    assert got.dtype.name == expected.dtype.name, (node.path, name, got.dtype, expected.dtype)
                    got = np.asarray(got, dtype=expected.dtype)  # native byte order, same values
                    assert got.tobytes() == expected.tobytes(), (node.path, name, t, href)
                    summary["compared"] += 1
                    # the CRS and grid as rioxarray and odc-geo read them
                    assert var.rio.crs == src.crs, (var.rio.crs, src.crs)
                    assert var.rio.transform().almost_equals(src.transform, 1e-12)
                    assert ds.odc.geobox.affine.almost_equals(src.transform, 1e-12)
                    if src.nodata is not None:
                        assert var.rio.nodata is not None
                        nodata = var.rio.nodata
                        assert np.isnan(src.nodata) if np.isnan(nodata) else nodata == src.nodata
            group["vars"][name] = {
                "dtype": var.dtype.name,
                "shape": list(var.shape),
                "chunks": [c[0] for c in var.chunks],
                "fill": None if var.attrs.get("_FillValue") is None else str(var.attrs["_FillValue"]),
                "rio_nodata": None if var.rio.nodata is None else float(var.rio.nodata),
            }
            if options.get("values"):  # the whole array, for comparisons in the test process
                buffer = io.BytesIO()
                np.save(buffer, np.asarray(values, dtype=values.dtype.newbyteorder("=")), allow_pickle=False)
                group["vars"][name]["values"] = buffer.getvalue().hex()
    assert "mosaic" not in sys.modules
    print(json.dumps(summary))
    """
)


def read_back(opener: Path, **options: str) -> dict:
    """The store opened by ``<store>.open.json`` in a fresh interpreter without mosaic, checked there.

    ``prefix`` and ``root``: hrefs are URLs of the test HTTP server, under ``prefix``, serving ``root``
    (rasterio reads the local files to compare).
    """
    env = dict(os.environ)  # mosaic's own folder left off the path (an installed mosaic stays unimported)
    paths = [
        p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and not (Path(p) / "mosaic").is_dir()
    ]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    proc = subprocess.run(
        [sys.executable, "-c", READBACK, str(opener), json.dumps(options)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def store_refs(path: Path) -> dict:
    """The references of a JSON store, their URL templates (``{{u0}}``) filled in."""
    store = json.loads(path.read_text())
    templates = store.get("templates", {})

    def url(value):
        return templates[value[2:-2]] if value.startswith("{{") else value

    return {k: [url(v[0]), *v[1:]] if isinstance(v, list) else v for k, v in store["refs"].items()}


def _tiff(path: Path, data: np.ndarray, *, block: int = 128, origin=(500000.0, 4000000.0), **options) -> Path:
    """A tiled GeoTIFF of ``data`` (bands, rows, cols), 20 m UTM 32N pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs="EPSG:32632",
        transform=from_origin(*origin, 20.0, 20.0),
        tiled=True,
        blockxsize=block,
        blockysize=block,
    )
    profile.update(options)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _noise(shape: tuple[int, ...], dtype: str, seed: int) -> np.ndarray:
    values = np.random.default_rng(seed).normal(3000, 900, shape)
    if np.dtype(dtype).kind == "f":
        return (values / 7.0).astype(dtype)
    info = np.iinfo(dtype)
    return values.clip(info.min, info.max).astype(dtype)


def _index(files, **kw) -> TileIndex:
    return TileIndex.from_files(
        [str(f) for f in files], pattern=PATTERN, tile_ranges=True, progress=False, **kw
    )


# ------------------------------------------------------------------------------- the demo collection


@pytest.fixture(scope="module")
def demo_files(demo_collection) -> list[str]:
    return sorted(str(p) for p in Path(demo_collection[0]).glob("*/*.tif"))


@pytest.fixture(scope="module")
def demo_tiles_index(demo_files) -> TileIndex:
    return _index(demo_files)


def test_demo_collection_exports_one_group_per_grid_and_reads_back_bit_for_bit(demo_tiles_index, tmp_path):
    idx = demo_tiles_index
    written = mosaic.export_virtual(idx, tmp_path / "demo.json")
    assert written == [tmp_path / "demo.json", tmp_path / "demo.json.open.json"]
    summary = read_back(written[1])
    rows = idx.records()
    grids = {(r.crs, r.transform, r.shape) for r in rows}
    assert len(summary["groups"]) == len(grids)
    # every band of every file compared once (the demo's multi-band 'visual' is pixel-interleaved: one
    # (time, y, x, band) array, compared whole)
    assert summary["compared"] == len(rows)
    # groups by CRS: UTM zones, polar stereographic, the antimeridian's UTM 60S and 1S
    crs_groups = Counter(path.split("/")[1] for path in summary["groups"])
    assert crs_groups == Counter(
        r.crs.replace(":", "_") for r in {(r.crs, r.transform, r.shape): r for r in rows}.values()
    )
    assert {"EPSG_3031", "EPSG_32760", "EPSG_32701"} <= set(crs_groups)
    # scenes stacked along time in time order, ids beside them; chunks are the COG tiles
    for group in summary["groups"].values():
        assert group["times"] == sorted(group["times"])
        for var in group["vars"].values():
            assert var["chunks"][:3] == [1, min(256, var["shape"][1]), min(256, var["shape"][2])]
    # per time step its scene's id and footprint (lon/lat WKT of the rows on that grid)
    for group in summary["groups"].values():
        transform, shape = tuple(group["grid"][0]), tuple(group["grid"][1])
        for scene, wkt in zip(group["ids"], group["footprints"], strict=True):
            mine = [
                r.footprint for r in rows if r.id == scene and r.transform == transform and r.shape == shape
            ]
            assert wkt == shapely.to_wkt(shapely.union_all(mine), rounding_precision=6)
    # no pixel copied: every chunk is a reference into a source file
    refs = store_refs(written[0])
    chunk_refs = [v for v in refs.values() if isinstance(v, list)]
    assert chunk_refs and {v[0] for v in chunk_refs} <= set(str(Path(r.href)) for r in rows)
    assert written[0].stat().st_size < sum(Path(r.href).stat().st_size for r in rows) / 5


def test_a_store_selects_by_bbox_time_and_bands(demo_tiles_index, tmp_path):
    out = tmp_path / "sel.json"
    mosaic.export_virtual(
        demo_tiles_index,
        out,
        bbox=(11.88, 45.40, 12.12, 45.58),
        time="2024-06-01/2024-06-12",
        bands=["B02", "visual"],
    )
    summary = read_back(Path(f"{out}.open.json"))
    expected = demo_tiles_index.query((11.88, 45.40, 12.12, 45.58), "2024-06-01/2024-06-12")
    chosen = [r for r in expected.records() if r.asset in ("B02", "visual")]
    assert summary["compared"] == len(chosen) > 0
    assert {v for g in summary["groups"].values() for v in g["vars"]} == {"B02", "visual"}
    with pytest.raises(InvalidInputError, match="'B99'"):
        mosaic.export_virtual(demo_tiles_index, tmp_path / "x.json", bands="B99")
    with pytest.raises(NoDataError):
        mosaic.export_virtual(demo_tiles_index, tmp_path / "x.json", time="1990-01")
    for bad, match in (
        (dict(bbox=(1, 2, 3)), "bbox must be four numbers"),
        (dict(bbox_crs="EPSG:nope"), "bbox_crs 'EPSG:nope'"),
        (dict(bands=[3]), "bands must be"),
        (dict(format="zarr"), "format must be 'json' or 'parquet'"),
        (dict(time="not a time"), "not a time"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            mosaic.export_virtual(demo_tiles_index, tmp_path / "x.json", **bad)
    assert not (tmp_path / "x.json").exists()


def test_an_index_without_tile_layouts_is_refused_with_the_fix(demo_index, tmp_path):
    with pytest.raises(VirtualStoreError, match=r"tile_ranges=True.*--tile-ranges"):
        mosaic.export_virtual(demo_index, tmp_path / "x.json", bands="B02")


# ----------------------------------------------------------------------------- codecs and types


ZLIB, ZSTD, LZW = "zlib", "imagecodecs_zstd", "imagecodecs_lzw"
DELTA, FLOATPRED = "imagecodecs_delta", "imagecodecs_floatpred"
CODEC_CASES = [
    ("uint16", dict(compress="DEFLATE", predictor=2, nodata=0), ZLIB, DELTA),
    ("uint16", dict(compress="ZSTD", predictor=1), ZSTD, None),
    ("int16", dict(compress="LZW", predictor=2, nodata=-9999), LZW, DELTA),
    ("int16", dict(compress="ZSTD", predictor=2), ZSTD, DELTA),
    ("float32", dict(compress="DEFLATE", predictor=3, nodata=float("nan")), ZLIB, FLOATPRED),
    ("float32", dict(compress="ZSTD", predictor=3, nodata=-9999.0), ZSTD, FLOATPRED),
    ("float32", dict(compress="LZW", predictor=3), LZW, FLOATPRED),
    ("uint16", dict(compress="NONE"), None, None),
    ("uint16", dict(compress="DEFLATE", predictor=2, count=3, interleave="band"), ZLIB, DELTA),  # band planes
    ("uint8", dict(compress="ZSTD", predictor=2, count=3, interleave="pixel"), ZSTD, DELTA),  # interleaved
    ("uint16", dict(compress="DEFLATE", predictor=2, ENDIANNESS="BIG"), ZLIB, DELTA),
    ("int16", dict(compress="PACKBITS"), "imagecodecs_packbits", None),
    ("float32", dict(compress="LZMA"), "lzma", None),
]  # fmt: skip
"""(dtype, GeoTIFF creation options, the Zarr compressor and filter the tiles need)."""


def test_codecs_predictors_and_types_read_back_bit_for_bit(tmp_path):
    files = []
    for case, (dtype, options, _, _) in enumerate(CODEC_CASES):  # each case on a grid of its own
        options = dict(options)
        count = options.pop("count", 1)
        for k in range(2):
            data = _noise((count, 300, 260), dtype, seed=10 * case + k)
            origin = (500000.0 + 10000 * case, 4000000.0)
            files.append(_tiff(tmp_path / f"c{case}s{k}" / "data.tif", data, origin=origin, **options))
    out = tmp_path / "store.json"
    mosaic.export_virtual(_index(files), out)
    refs = store_refs(out)
    summary = read_back(Path(f"{out}.open.json"))
    groups = sorted(summary["groups"].values(), key=lambda g: int(g["ids"][0][1:].split("s")[0]))
    assert len(groups) == len(CODEC_CASES)
    compared = 0
    for case, (group, (dtype, options, compressor, predictor)) in enumerate(
        zip(groups, CODEC_CASES, strict=True)
    ):
        assert group["ids"] == [f"c{case}s0", f"c{case}s1"]
        count = options.get("count", 1)
        interleaved = count > 1 and options.get("interleave") == "pixel"
        compared += 2 * (1 if interleaved else count)
        names = ["data"] if count == 1 or interleaved else [f"data.{k}" for k in range(1, count + 1)]
        assert sorted(group["vars"]) == names
        for var in group["vars"].values():
            assert var["dtype"] == dtype
            assert var["chunks"][:3] == [1, 128, 128]
            assert var["shape"] == [2, 300, 260] + ([3] if interleaved else [])
        # the codec chain the tiles need, and nothing else
        path = next(p for p in summary["groups"] if summary["groups"][p] is group).strip("/")
        zarray = json.loads(refs[f"{path}/{names[0]}/.zarray"])
        assert (zarray["compressor"] or {}).get("id") == compressor
        assert [f["id"] for f in zarray["filters"] or []] == ([predictor] if predictor else [])
        assert zarray["dtype"][0] == (
            ">" if options.get("ENDIANNESS") == "BIG" else "<" if dtype != "uint8" else "|"
        )
    assert summary["compared"] == compared


def test_sparse_tiles_are_missing_chunks_read_as_gdal_reads_them(tmp_path):
    files = []
    for k, nodata in enumerate((7, None)):
        path = tmp_path / f"s{k}" / "band.tif"
        path.parent.mkdir(parents=True)
        with rasterio.open(
            path, "w", driver="GTiff", width=300, height=300, count=1, dtype="uint16", crs="EPSG:32632",
            transform=from_origin(500000.0, 4000000.0, 20.0, 20.0), tiled=True, blockxsize=128,
            blockysize=128, compress="DEFLATE", nodata=nodata, SPARSE_OK=True,
        ) as dst:  # fmt: skip
            dst.write(_noise((1, 128, 128), "uint16", seed=k)[0], 1, window=Window(128, 0, 128, 128))
        files.append(path)
    out = tmp_path / "sparse.json"
    mosaic.export_virtual(_index(files), out, mixed="split")
    refs = store_refs(out)
    chunks = [k for k, v in refs.items() if isinstance(v, list)]
    assert len(chunks) == 2  # one written tile per file; the 8 others of each are missing chunks
    summary = read_back(Path(f"{out}.open.json"))
    assert summary["compared"] == 2
    fills = sorted(str(v["fill"]) for g in summary["groups"].values() for v in g["vars"].values())
    assert fills == ["7", "None"]  # the nodata file's fill is its nodata; the other reads 0


# ----------------------------------------------------------------------------------- Zarr's limits


def _mixed_files(tmp_path: Path) -> list[Path]:
    data = _noise((1, 300, 260), "uint16", seed=3)
    return [
        _tiff(tmp_path / "a" / "band.tif", data, compress="DEFLATE", predictor=2),
        _tiff(tmp_path / "b" / "band.tif", data, compress="DEFLATE", predictor=2),
        _tiff(tmp_path / "c" / "band.tif", data, compress="ZSTD", predictor=2),
        _tiff(tmp_path / "d" / "band.tif", data, block=256, compress="DEFLATE", predictor=2),
    ]


def test_mixed_tilings_and_codecs_go_to_groups_of_their_own(tmp_path):
    out = tmp_path / "mixed.json"
    mosaic.export_virtual(_index(_mixed_files(tmp_path)), out)
    summary = read_back(Path(f"{out}.open.json"))
    groups = summary["groups"]
    assert len(groups) == 3
    base = min(groups, key=len)
    assert set(groups) == {base, f"{base}~2", f"{base}~3"}
    assert [groups[p]["ids"] for p in (base, f"{base}~2", f"{base}~3")] == [["a", "b"], ["c"], ["d"]]
    assert groups[f"{base}~3"]["vars"]["band"]["chunks"][1:] == [256, 256]
    assert summary["compared"] == 4


def test_mixed_tilings_raise_an_error_naming_the_scenes_when_asked(tmp_path):
    with pytest.raises(VirtualStoreError, match=r"\['c'\] have band tiles zstd.*\['d'\].*256x256.*'a'"):
        mosaic.export_virtual(_index(_mixed_files(tmp_path)), tmp_path / "x.json", mixed="error")
    with pytest.raises(InvalidInputError, match="mixed"):
        mosaic.export_virtual(_index(_mixed_files(tmp_path)), tmp_path / "x.json", mixed="merge")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- real files


def test_real_landsat_and_dem_converted_to_cogs_read_back_bit_for_bit(tmp_path):
    cogs = []
    for name, source, options in (
        ("l7px", L7, dict(driver="COG", COMPRESS="DEFLATE", PREDICTOR=2, BLOCKSIZE=128)),  # pixel-interleaved
        ("l7band", L7, dict(driver="GTiff", tiled=True, blockxsize=128, blockysize=128, COMPRESS="ZSTD",
                            PREDICTOR=2, INTERLEAVE="BAND")),  # one tile plane per band
        ("dem", DEM, dict(driver="COG", COMPRESS="DEFLATE", PREDICTOR=3, BLOCKSIZE=128)),  # custom CRS
    ):  # fmt: skip
        target = tmp_path / name / "data.tif"
        target.parent.mkdir()
        with rasterio.open(source) as src:
            profile = {
                k: src.profile[k] for k in ("width", "height", "count", "dtype", "crs", "transform", "nodata")
            }
            with rasterio.open(target, "w", **profile, **options) as dst:
                dst.write(src.read())
        cogs.append(target)
    out = tmp_path / "real.json"
    mosaic.export_virtual(_index(cogs), out)
    summary = read_back(Path(f"{out}.open.json"))
    assert summary["compared"] == 1 + 6 + 1
    # one grid for both Landsat files: the pixel-interleaved one as one (time, y, x, band) array, the
    # band-interleaved one as one (time, y, x) array per band; each time step holds one of the two
    by_vars = {tuple(sorted(g["vars"])): g for g in summary["groups"].values()}
    assert set(by_vars) == {("data",), ("data", *(f"data.{k}" for k in range(1, 7)))}
    assert by_vars[("data",)]["vars"]["data"]["dtype"] == "float32"
    assert by_vars[("data",)]["vars"]["data"]["shape"] == [1, 111, 111]
    assert by_vars[("data", "data.1", "data.2", "data.3", "data.4", "data.5", "data.6")]["ids"] == [
        "l7band",
        "l7px",
    ]
    crs_names = {p.split("/")[1] for p in summary["groups"]}
    assert "EPSG_31985" in crs_names and any(n.startswith("CRS_") for n in crs_names)  # the custom CRS


def test_real_fill_zero_scenes_keep_the_index_nodata(tmp_path):
    """Landsat Level-1 files fill with 0 and say nothing; the index's nodata=0 reaches rioxarray."""
    files = fill_zero_scenes(tmp_path / "l1")
    out = tmp_path / "l1.json"
    mosaic.export_virtual(TileIndex.from_files(files, nodata=0, tile_ranges=True, progress=False), out)
    summary = read_back(Path(f"{out}.open.json"))
    assert summary["compared"] == 2 and len(summary["groups"]) == 2  # two windows: two grids
    for group in summary["groups"].values():
        (var,) = group["vars"].values()
        assert var["fill"] is None  # the files declare no nodata: a missing tile reads 0, as in GDAL
        assert var["rio_nodata"] == 0.0  # the index's nodata, as rioxarray reads it
        assert group["times"][0].startswith("2001-07-")


# ---------------------------------------------------------------------------------- hrefs and secrets


def _with_href(row: SceneAsset, href: str) -> SceneAsset:
    fields = {name: getattr(row, name) for name in SceneAsset.__dataclass_fields__}
    return SceneAsset(**(fields | {"href": href}))


def test_remote_hrefs_are_written_as_such_with_no_credentials(demo_tiles_index, tmp_path):
    rows = [r for r in demo_tiles_index.records() if r.asset == "B02"][:2]
    remote = TileIndex.from_records(
        [
            _with_href(rows[0], "s3://bucket/scenes/a/B02.tif"),
            _with_href(rows[1], "/vsis3/bucket/scenes/b/B02.tif"),
        ]
    )
    out = tmp_path / "s3.json"
    mosaic.export_virtual(remote, out)
    urls = {v[0] for v in store_refs(out).values() if isinstance(v, list)}
    assert urls == {"s3://bucket/scenes/a/B02.tif", "s3://bucket/scenes/b/B02.tif"}
    kwargs = json.loads(Path(f"{out}.open.json").read_text())
    assert kwargs["storage_options"]["remote_protocol"] == "s3"
    assert kwargs["storage_options"]["remote_options"] == {"asynchronous": True}  # no credentials
    https = TileIndex.from_records([_with_href(rows[0], "https://example.com/a/B02.tif")])
    mosaic.export_virtual(https, tmp_path / "h.json")
    assert {v[0] for v in store_refs(tmp_path / "h.json").values() if isinstance(v, list)} == {
        "https://example.com/a/B02.tif"
    }
    both = TileIndex.from_records(
        [_with_href(rows[0], "https://example.com/a/B02.tif"), _with_href(rows[1], "s3://b/b/B02.tif")]
    )
    mosaic.export_virtual(both, tmp_path / "both.json")
    kwargs = json.loads(Path(f"{tmp_path / 'both.json'}.open.json").read_text())
    assert kwargs["storage_options"]["fs"] == {"https": {"asynchronous": True}, "s3": {"asynchronous": True}}


def test_http_hrefs_read_back_one_request_per_tile_and_no_header(http_server, demo_collection, tmp_path):
    root = Path(demo_collection[0])
    files = sorted(root.glob("S3*-seam12-202406*/B02.tif"))
    urls = [http_server.url(f.relative_to(root).as_posix()) for f in files]
    index = TileIndex.from_files(urls, pattern=PATTERN, tile_ranges=True, progress=False)
    out = tmp_path / "http.json"
    mosaic.export_virtual(index, out)
    refs = store_refs(out)
    chunks = [v for v in refs.values() if isinstance(v, list)]
    assert {v[0] for v in chunks} == set(urls)  # the hrefs as they are
    kwargs = json.loads(Path(f"{out}.open.json").read_text())
    assert kwargs["storage_options"]["remote_protocol"] == "http"
    http_server.reset_stats()
    summary = read_back(Path(f"{out}.open.json"), prefix=http_server.url(""), root=f"{root}/")
    assert summary["compared"] == len(files) > 2
    # exactly the tiles, each once, by its byte range: no HEAD, no header request
    prefix = urlsplit(http_server.url("")).path
    asked = sorted((r.method, r.path, r.range) for r in http_server.log)
    wanted = sorted(
        ("GET", "/" + urlsplit(url).path[len(prefix) :].lstrip("/"), f"bytes={start}-{start + size - 1}")
        for url, start, size in chunks
    )
    assert asked == wanted


@pytest.mark.parametrize(
    "href",
    [
        "https://example.com/a/B02.tif?sig=SECRETVALUE&se=2030",
        "https://user:SECRETVALUE@example.com/a/B02.tif",
        "https://example.com/a/B02.tif?X-Amz-Signature=SECRETVALUE",
    ],
)
def test_hrefs_with_secrets_are_refused_and_not_echoed(demo_tiles_index, tmp_path, href):
    row = next(r for r in demo_tiles_index.records() if r.asset == "B02")
    with pytest.raises(InvalidInputError, match="carries") as info:
        mosaic.export_virtual(TileIndex.from_records([_with_href(row, href)]), tmp_path / "x.json")
    assert "SECRETVALUE" not in str(info.value)
    assert not (tmp_path / "x.json").exists()


def test_local_and_remote_hrefs_in_one_store_are_refused(demo_tiles_index, tmp_path):
    rows = [r for r in demo_tiles_index.records() if r.asset == "B02"][:2]
    mixed = TileIndex.from_records([rows[0], _with_href(rows[1], "s3://bucket/b/B02.tif")])
    with pytest.raises(VirtualStoreError, match="mix local files"):
        mosaic.export_virtual(mixed, tmp_path / "x.json")


def test_tiles_without_a_zarr_codec_are_refused_naming_the_scene(tmp_path):
    path = _tiff(tmp_path / "lerc1" / "data.tif", _noise((1, 64, 64), "uint16", 1), block=32, compress="LERC")
    with pytest.raises(VirtualStoreError, match=r"scene 'lerc1' band 'data': lerc tiles"):
        mosaic.export_virtual(_index([path]), tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_a_rotated_grid_is_refused(tmp_path):
    path = _tiff(tmp_path / "r" / "band.tif", _noise((1, 64, 64), "uint16", 1), block=32)
    row = _index([path]).records()[0]
    fields = {name: getattr(row, name) for name in SceneAsset.__dataclass_fields__}
    rotated = SceneAsset(**(fields | {"transform": (20.0, 1.0, 500000.0, 1.0, -20.0, 4000000.0)}))
    with pytest.raises(VirtualStoreError, match="rotated grid"):
        mosaic.export_virtual(TileIndex.from_records([rotated]), tmp_path / "x.json")


# ------------------------------------------------------------------------------------------- CLI


def test_cli_tree_export_end_to_end(demo_files, tmp_path):
    index = tmp_path / "index.parquet"
    runner = CliRunner()
    built = runner.invoke(
        cli, ["index", "build", *demo_files, "-o", str(index), "--tile-ranges", "--pattern", PATTERN]
    )
    assert built.exit_code == 0, built.output
    out = tmp_path / "store.json"
    args = ["tree", "export", "--index", str(index), "-o", str(out), "--bands", "B02,B8A"]
    result = runner.invoke(cli, [*args, "--time", "2024-06", "--bbox", "11.88,45.40,12.12,45.58"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"wrote {out}", f"wrote {out}.open.json"]
    summary = read_back(Path(f"{out}.open.json"))
    rows = TileIndex.read(index).query((11.88, 45.40, 12.12, 45.58), "2024-06").records()
    assert summary["compared"] == len([r for r in rows if r.asset in ("B02", "B8A")]) > 0
    bad = runner.invoke(
        cli, ["tree", "export", "--index", str(index), "-o", str(tmp_path / "x.json"), "--bands", "B99"]
    )
    assert bad.exit_code == 1 and bad.output.startswith("error: band 'B99'")
    mixed = runner.invoke(
        cli, ["tree", "export", "--index", str(index), "-o", str(tmp_path / "y.json"), "--mixed", "no"]
    )
    assert mixed.exit_code == 2


@pytest.mark.skipif(find_spec("fastparquet") is None, reason="Parquet references need fastparquet")
def test_parquet_references_read_back_bit_for_bit(demo_tiles_index, tmp_path):
    out = tmp_path / "store.parq"
    index = demo_tiles_index.write(tmp_path / "index.parquet")
    args = ["tree", "export", "--index", str(index), "-o", str(out), "--format", "parquet"]
    result = CliRunner().invoke(cli, [*args, "--time", "2024-06-01/2024-06-12"])
    assert result.exit_code == 0, result.output
    assert out.is_dir()
    summary = read_back(Path(f"{out}.open.json"))
    assert summary["compared"] == len(demo_tiles_index.query(time="2024-06-01/2024-06-12").records()) > 0


@pytest.mark.parametrize("package", ["fastparquet", "kerchunk"])
def test_parquet_without_its_packages_says_what_to_install(demo_tiles_index, tmp_path, monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # not installed, as far as imports go
    with pytest.raises(MissingExtraError, match=rf"{package}.*virtual-mosaic\[virtual\]"):
        mosaic.export_virtual(demo_tiles_index, tmp_path / "x.parq", format="parquet")
    assert not (tmp_path / "x.parq").exists()


def test_the_store_read_back_without_mosaic_equals_open_tree(demo_tiles_index, tmp_path):
    """Same node paths as the tree, and every single-band variable equal to the tree's, bit for bit."""
    written = mosaic.export_virtual(demo_tiles_index, tmp_path / "tree.json")
    tree = mosaic.open_tree(demo_tiles_index)
    nodes = {node.path: node for node in tree.subtree if node.has_data}
    summary = read_back(written[1], values="1")
    assert set(summary["groups"]) == set(nodes)
    compared = 0
    for path, group in summary["groups"].items():
        node = nodes[path].to_dataset()
        for name, var in group["vars"].items():
            if len(var["shape"]) != 3:  # a pixel-interleaved file: one (time, y, x, band) array
                continue
            want = node[name].values
            got = np.load(io.BytesIO(bytes.fromhex(var["values"])), allow_pickle=False)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (path, name)  # NaNs too
            compared += 1
    assert compared >= len(nodes)


def test_a_tree_opened_from_a_saved_index_exports_its_own_scenes(demo_tiles_index, tmp_path):
    path = tmp_path / "index.parquet"
    demo_tiles_index.write(path)
    tree = mosaic.open_tree(path, bands=["B02"], time="2024-06-01/2024-06-11")
    written = mosaic.export_virtual(tree, tmp_path / "from_tree.json")
    summary = read_back(written[1])
    assert set(summary["groups"]) == {node.path for node in tree.subtree if node.has_data}
    assert all(set(group["vars"]) == {"B02"} for group in summary["groups"].values())
    assert summary["compared"] == sum(
        int((node.to_dataset()["B02_href"].values != "").sum()) for node in tree.subtree if node.has_data
    )
    with pytest.raises(InvalidInputError, match="in-memory TileIndex"):
        mosaic.export_virtual(mosaic.open_tree(demo_tiles_index), tmp_path / "x.json")


def test_a_filter_selects_the_scenes_exported(demo_tiles_index, tmp_path):
    written = mosaic.export_virtual(demo_tiles_index, tmp_path / "f.json", filter="id LIKE 'S33%'")
    summary = read_back(written[1])
    exported = {scene for group in summary["groups"].values() for scene in group["ids"]}
    assert exported == {r.id for r in demo_tiles_index if r.id.startswith("S33")}


@pytest.mark.filterwarnings("ignore::mosaic.errors.IncompleteMetadataWarning")
def test_real_stac_items_export_their_grids_named_as_the_tree_names_them(tmp_path):
    """The real Sentinel-2 Items (files written on their B01 grids): the store's groups are the tree's
    MGRS-named nodes, and read back without mosaic they equal open_tree bit for bit."""
    index = TileIndex.from_stac(sentinel2_b01_items(tmp_path), assets=["B01"], tile_ranges=True)
    written = mosaic.export_virtual(index, tmp_path / "s2.json")
    summary = read_back(written[1], values="1")
    tree = mosaic.open_tree(index)
    assert (
        sorted(summary["groups"])
        == sorted(leaf.path for leaf in tree.leaves)
        == [
            "/EPSG_32646/46XER_60m",
            "/EPSG_32646/46XES_60m",
            "/EPSG_32647/47XMJ_60m",
            "/EPSG_32647/47XML_60m",
        ]
    )
    for leaf in tree.leaves:
        got = np.load(io.BytesIO(bytes.fromhex(summary["groups"][leaf.path]["vars"]["B01"]["values"])))
        assert got.tobytes() == leaf.to_dataset()["B01"].values.tobytes(), leaf.path
    assert summary["compared"] == 4
