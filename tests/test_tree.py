"""The virtual data tree (``mosaic.open_tree``): every scene on its own native grid, read without warping.

Pixels are compared with rasterio reading the files; read counts come from the reader's limiter
(``mosaic.read_stats``) and from the real HTTP server's request log.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine

import mosaic
from mosaic import TileIndex
from mosaic.errors import InvalidInputError, NoDataError
from mosaic.io import runtime
from mosaic.io.cog import decode_layout
from mosaic.outputs.tree import grid_code, grid_nodes, open_tree, plan_tree
from real_data import L7, LANDSAT_ITEMS, SENTINEL2_ITEMS, fill_zero_scenes, sentinel2_b01_items
from servers import clear_gdal_http_cache

SEAM = (11.88, 45.40, 12.12, 45.58)  # lon/lat, across the UTM 32N/33N seam (three dates)


def _grids(index: TileIndex, assets: set[str] | None = None) -> set[tuple]:
    """The distinct native grids (CRS, transform, shape) of an index's rows."""
    return {
        (mosaic.planning.records.crs_to_string(r.crs), tuple(r.transform), tuple(r.shape))
        for r in index
        if r.href is not None and (assets is None or r.asset in assets)
    }


def _rasterio_read(href: str, band: int) -> np.ndarray:
    with rasterio.open(href) as src:
        return src.read(band)


def _check_every_scene(tree: xr.DataTree) -> int:
    """Every (node, band, time step) equals rasterio's read of its file, bit for bit; returns how many."""
    checked = 0
    for leaf in tree.leaves:
        ds = leaf.to_dataset()
        for name, var in ds.data_vars.items():
            values = var.values  # computed once per variable
            for t, href in enumerate(ds[f"{name}_href"].values):
                want = _rasterio_read(href, var.attrs["asset_band"])
                assert values[t].dtype == want.dtype, (leaf.path, name)
                np.testing.assert_array_equal(values[t], want, err_msg=f"{leaf.path} {name} step {t}")
                checked += 1
    return checked


# ------------------------------------------------------------------------------------ grids and names


def test_demo_tree_has_one_node_per_distinct_grid_and_every_scene_pixel_exactly(demo_index):
    tree = open_tree(demo_index)
    assert len(tree.leaves) == len(_grids(demo_index))
    # every node path is /<crs>/<grid>, its CRS that of its scenes
    for leaf in tree.leaves:
        crs, _grid = leaf.path.strip("/").split("/")
        ds = leaf.to_dataset()
        assert crs == ds.attrs["crs"] and ds.rio.crs.to_string().replace(":", "_") == crs
    # UTM zones, both polar stereographic grids and both sides of the antimeridian are there
    crss = {leaf.path.split("/")[1] for leaf in tree.leaves}
    assert {"EPSG_32632", "EPSG_32633", "EPSG_3413", "EPSG_3031", "EPSG_32760", "EPSG_32701"} <= crss
    rows = sum(1 for r in demo_index for _ in range(r.band_count))  # (scene, asset band) pairs
    assert _check_every_scene(tree) == rows


def test_names_are_stable_readable_and_zarr_safe(demo_index):
    first = [n.path for n in plan_tree(demo_index).nodes]
    again = [n.path for n in plan_tree(demo_index.take(np.arange(len(demo_index))[::-1])).nodes]
    assert first == again  # the order of the index rows does not matter
    assert "/EPSG_32633/x260880_y5046000_20m_768x768" in first  # origin, resolution, shape
    for path in first:
        for part in path.strip("/").split("/"):
            assert part and not part.startswith("__") and all(c.isalnum() or c in "-_." for c in part)


@pytest.mark.filterwarnings(
    "ignore::mosaic.errors.IncompleteMetadataWarning"
)  # (their files are not reached)
def test_real_stac_items_nodes_are_their_grids_named_by_their_codes():
    s2 = TileIndex.from_stac(SENTINEL2_ITEMS)
    plan = plan_tree(s2, chunks=1024)  # (explicit chunks: the files are not reachable from the tests)
    assert len(plan.nodes) == len(_grids(s2)) == 12  # 4 MGRS tiles x 10, 20 and 60 m grids
    paths = {n.path for n in plan.nodes}
    assert {"/EPSG_32647/47XML_10m", "/EPSG_32647/47XMJ_60m", "/EPSG_32646/46XES_20m"} <= paths
    node = plan.node("/EPSG_32647/47XML_10m")
    assert node.transform == (10.0, 0.0, 399960.0, 0.0, -10.0, 9100020.0) and node.shape == (10980, 10980)
    assert {b.name for b in node.bands} == {
        "AOT",
        "B02",
        "B03",
        "B04",
        "B08",
        "WVP",
        *(f"visual.{i}" for i in (1, 2, 3)),
    }
    landsat = TileIndex.from_stac(LANDSAT_ITEMS, assets=["red", "qa"])
    plan = plan_tree(landsat, chunks=1024, bands="red")
    assert len(plan.nodes) == len(_grids(landsat, {"red"})) == 4
    assert {n.path for n in plan.nodes} == {
        "/EPSG_32655/WRS2-089088_30m",
        "/EPSG_32655/WRS2-089089_30m",
        "/EPSG_32655/WRS2-089090_30m",
        "/EPSG_32656/WRS2-089087_30m",
    }
    source = plan.node("/EPSG_32656/WRS2-089087_30m").steps[0].scenes[0].sources[0]
    assert landsat.records()[source.row].href == source.read.href  # the index row it came from


@pytest.mark.filterwarnings("ignore::mosaic.errors.IncompleteMetadataWarning")
def test_real_stac_items_pixels_exactly_with_their_files_written_here(tmp_path):
    """The real Sentinel-2 Items' B01 grids (1830 x 1830 at 60 m, two UTM zones), with files written on
    exactly those grids in place of the unreachable archive: each node holds its file's pixels."""
    items = sentinel2_b01_items(tmp_path)
    index = TileIndex.from_stac(items, assets=["B01"])
    tree = open_tree(index)
    assert sorted(leaf.path for leaf in tree.leaves) == [
        "/EPSG_32646/46XER_60m",
        "/EPSG_32646/46XES_60m",
        "/EPSG_32647/47XMJ_60m",
        "/EPSG_32647/47XML_60m",
    ]
    assert _check_every_scene(tree) == 4
    assert all(leaf.to_dataset().attrs["chunks"] == [256, 256] for leaf in tree.leaves)


def test_grid_codes_from_stac_properties():
    assert grid_code({"grid:code": "MGRS-32TQM", "s2:mgrs_tile": "32TQM"}) == "MGRS-32TQM"
    assert grid_code({"mgrs:utm_zone": 5, "mgrs:latitude_band": "V", "mgrs:grid_square": "NK"}) == "05VNK"
    assert grid_code(json.dumps({"landsat:wrs_path": "89", "landsat:wrs_row": "7"})) == "WRS2-089007"
    assert grid_code({"platform": "x"}) is None and grid_code(None) is None


def _write(path: Path, data: np.ndarray, transform: Affine, **kw) -> str:
    profile = dict(driver="GTiff", dtype=data.dtype.name, count=1, height=data.shape[0], width=data.shape[1])
    profile.update(crs="EPSG:32633", transform=transform, tiled=True, blockxsize=32, blockysize=32, **kw)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return str(path)


def test_grids_a_pixel_apart_are_separate_nodes(tmp_path):
    """Two granules of one tile whose shapes differ by one row: one Zarr array cannot hold both."""
    transform = Affine(30, 0, 500_000, 0, -30, 5_000_000)
    rng = np.random.default_rng(0)
    a = _write(tmp_path / "a.tif", rng.integers(1, 999, (96, 64), dtype="uint16"), transform, nodata=0)
    b = _write(tmp_path / "b.tif", rng.integers(1, 999, (97, 64), dtype="uint16"), transform, nodata=0)
    rows = [
        mosaic.planning.records.SceneAsset(
            id=name,
            asset="B1",
            href=href,
            crs="EPSG:32633",
            transform=tuple(transform)[:6],
            shape=shape,
            footprint=TileIndex.from_files([href], progress=False).records()[0].footprint,
            datetime=None,
            dtype="uint16",
            nodata=0.0,
            properties=json.dumps({"grid:code": "T33"}),
        )
        for name, href, shape in (("a", a, (96, 64)), ("b", b, (97, 64)))
    ]
    index = TileIndex.from_records(rows)
    nodes = grid_nodes(index.records())
    assert len(nodes) == 2
    paths = [p for p, _ in nodes]
    assert all(p.startswith("/EPSG_32633/T33_30m_") for p in paths) and len(set(paths)) == 2
    tree = open_tree(index)
    assert sorted(leaf.to_dataset().sizes["y"] for leaf in tree.leaves) == [96, 97]
    assert _check_every_scene(tree) == 2


def test_real_landsat_and_custom_crs_dem_pixels_exactly(tmp_path):
    """The real Landsat 7 subset (6 bands, no nodata tag) and the real DEM in a CRS without an EPSG code."""
    from real_data import DEM

    index = TileIndex.from_files([L7, DEM], progress=False)
    tree = open_tree(index)
    paths = sorted(leaf.path for leaf in tree.leaves)
    assert len(paths) == 2 == len(_grids(index))
    assert paths[0].startswith("/CRS_") and paths[1].startswith("/EPSG_31985/")  # the DEM's custom CRS
    assert "nodata" not in tree[paths[1]].to_dataset()["data.1"].attrs  # the file declares none
    assert _check_every_scene(tree) == 7


# ----------------------------------------------------------------------------------------- chunks, reads


def test_default_chunks_are_the_cog_tiles_with_or_without_the_tile_layout(demo_collection):
    plain = plan_tree(TileIndex.from_stac(demo_collection[1]), bbox=SEAM, bands="B02")
    layout = plan_tree(TileIndex.from_stac(demo_collection[1], tile_ranges=True), bbox=SEAM, bands="B02")
    for node in (*plain.nodes, *layout.nodes):
        href = node.steps[0].scenes[0].sources[0].read.href
        with rasterio.open(href) as src:
            assert node.chunks == src.block_shapes[0] == (256, 256)
    assert plan_tree(demo_collection[1], bbox=SEAM, bands="B02", chunks=100).nodes[0].chunks == (100, 100)


def test_a_churro_reads_one_tile_per_scene(demo_index):
    tree = open_tree(demo_index, bbox=SEAM, bands="B02")
    node = tree["/EPSG_32633"].leaves[0].to_dataset()
    assert node.sizes["time"] == 3
    runtime.reset()
    series = node.B02.isel(y=300, x=500).values
    assert mosaic.read_stats().reads == 3  # one read per scene, each of the chunk (= tile) holding the pixel
    want = [_rasterio_read(h, 1)[300, 500] for h in node.B02_href.values]
    np.testing.assert_array_equal(series, want)


def test_a_churro_over_http_fetches_one_tile_range_per_scene(http_server, demo_collection):
    root = demo_collection[0]
    files = sorted(root.glob("S33-seam12-*/B02.tif"))
    urls = [http_server.url(p.relative_to(root).as_posix()) for p in files]
    pattern = r"(?P<id>S33-seam12-(?P<datetime>\d{8}))/(?P<asset>B02)\.tif$"
    index = TileIndex.from_files(urls, pattern=pattern, progress=False, tile_ranges=True)
    tree = open_tree(index)  # chunks from the recorded layout: no request
    clear_gdal_http_cache()
    http_server.reset_stats()
    runtime.reset()
    (leaf,) = tree.leaves
    series = leaf.to_dataset().B02.isel(y=300, x=500).values
    log = http_server.log
    assert len(files) == 3 and len(log) == 3 and {r.method for r in log} == {"GET"}
    sizes = {}
    for row in index:  # the byte range of the tile holding pixel (300, 500) in each file
        level = decode_layout(row.tiles).levels[0]
        tiles_across = -(-level.width // 256)
        k = (300 // 256) * tiles_across + 500 // 256
        start = int(level.offsets[k])
        sizes["/" + row.href.split("/", 3)[3]] = f"bytes={start}-{start + int(level.sizes[k]) - 1}"
    assert {r.path: r.range for r in log} == sizes  # exactly that tile of each scene, nothing else
    assert mosaic.read_stats().tile_range_reads == 3
    want = [_rasterio_read(str(p), 1)[300, 500] for p in files]
    np.testing.assert_array_equal(series, want)


# ------------------------------------------------------------------------------------------ group_by="crs"


def _by_hand(node, band: str) -> np.ndarray:
    """The node's band placed scene by scene on its grid, first valid pixel in fusion order."""
    spec = node.band(band)
    fill = spec.nodata if spec.nodata is not None else 0
    out = np.full((len(node.steps), *node.shape), fill, dtype=spec.dtype)
    for t, step in enumerate(node.steps):
        taken = np.zeros(node.shape, dtype=bool)
        for scene in step.scenes:
            src = scene.source(band)
            r, c, h, w = src.box
            pixels = _rasterio_read(src.read.href, src.read.band)
            valid = np.ones_like(pixels, dtype=bool) if src.read.nodata is None else pixels != src.read.nodata
            put = valid & ~taken[r : r + h, c : c + w]
            out[t, r : r + h, c : c + w][put] = pixels[put]
            taken[r : r + h, c : c + w] |= valid
    return out


@pytest.mark.parametrize("groupby", ["solar_day", None])
def test_group_by_crs_places_scenes_on_the_union_of_their_grids_as_by_hand(demo_index, groupby):
    """33N scenes at 12E and 15E on one union grid per resolution; with groupby=None the three dates of
    the 12E scene overlap and fuse (first valid pixel, their collars differ)."""
    area = (11.9, 45.35, 15.1, 45.8)
    kw = dict(bbox=area, bands=["AOT", "B8A"], group_by="crs", groupby=groupby)
    tree = open_tree(demo_index, **kw)
    plan = plan_tree(demo_index, **kw)
    assert [leaf.path for leaf in tree.leaves] == [n.path for n in plan.nodes]
    assert {n.path for n in plan.nodes} == {
        "/EPSG_32632/40m",
        "/EPSG_32632/60m",
        "/EPSG_32633/40m",
        "/EPSG_32633/60m",
    }
    for path, band in (("/EPSG_32633/60m", "AOT"), ("/EPSG_32633/40m", "B8A")):
        node = plan.node(path)
        scenes = {s.id.rsplit("-", 1)[0] for step in node.steps for s in step.scenes}
        assert scenes == {"S33-seam12", "S33-mid"}
        assert max(len(step.scenes) for step in node.steps) >= 2
        got = tree[path].to_dataset()[band].values
        np.testing.assert_array_equal(got, _by_hand(node, band))
    # a pixel of the 15E scene: its series reads that scene only, one read per step holding it
    node = plan.node("/EPSG_32633/60m")
    (src,) = {s.source("AOT").box for step in node.steps for s in step.scenes if s.id.startswith("S33-mid")}
    runtime.reset()
    tree["/EPSG_32633/60m"].to_dataset().AOT.isel(y=src[0] + 10, x=src[1] + 10).compute()
    holding = sum(any(s.id.startswith("S33-mid") for s in step.scenes) for step in node.steps)
    mids = sum(s.id.startswith("S33-mid") for step in node.steps for s in step.scenes)
    assert 0 < holding <= mosaic.read_stats().reads <= mids  # never a scene of the 12E seam


def test_group_by_crs_of_real_fill_zero_scenes(tmp_path):
    """Two real-pixel scenes, overlapping, 0 fill and no nodata tag: one node, each at its offset."""
    files = fill_zero_scenes(tmp_path)
    index = TileIndex.from_files(files, progress=False)
    assert len(open_tree(index).leaves) == 2  # two grids
    tree = open_tree(index, group_by="crs", groupby=None)
    (leaf,) = tree.leaves
    plan = plan_tree(index, group_by="crs", groupby=None)
    np.testing.assert_array_equal(leaf.to_dataset()["data"].values, _by_hand(plan.nodes[0], "data"))
    assert leaf.to_dataset().sizes == {"time": 1, "y": 352, "x": 349}  # the union of both grids


# --------------------------------------------------------------------------------------- interoperability


def test_rioxarray_and_odc_geo_read_each_nodes_grid(demo_index):
    plan = plan_tree(demo_index, bands="B02")
    tree = open_tree(demo_index, bands="B02")
    for node in plan.nodes:
        ds = tree[node.path].to_dataset()
        assert ds.rio.crs == rasterio.crs.CRS.from_wkt(node.crs_wkt)
        assert tuple(ds.rio.transform())[:6] == node.transform
        assert ds.odc.geobox == node.geobox and ds.B02.odc.nodata == 0
        assert ds.B02.rio.nodata == 0 and ds.B02.attrs["_FillValue"] == 0


def test_attrs_summarise_the_index_and_nodes_carry_provenance(demo_index):
    tree = open_tree(demo_index, bbox=SEAM, bands="B02")
    assert tree.attrs["scenes"] == 6 and tree.attrs["nodes"] == 2 and tree.attrs["group_by"] == "grid"
    assert tree.attrs["crs"] == ["EPSG_32632", "EPSG_32633"]
    ds = tree.leaves[0].to_dataset()
    assert list(ds.scene_id.values) == sorted(ds.scene_id.values) and ds.footprint.values[0].startswith(
        "POLYGON"
    )
    plan = plan_tree(demo_index, bbox=SEAM, bands="B02")
    assert pickle.loads(pickle.dumps(plan)) == plan  # frozen records, cheap to ship to workers


def test_a_node_and_loads_mosaic_agree_where_the_grid_is_the_nodes(demo_index):
    """The documented one-liner: load onto a node's own grid gives the node's pixels where it has data."""
    tree = open_tree(demo_index, time="2024-06-01", bbox=SEAM, bands="B02")
    node = tree["/EPSG_32633"].leaves[0].to_dataset()
    (scene,) = node.scene_id.values
    one = TileIndex.from_records([r for r in demo_index if r.id == scene])  # (load would put 32N first)
    mos = mosaic.load(geobox=node.odc.geobox, index=one, bands="B02", chunks=256)
    a, b = node.B02.isel(time=0).values, mos.B02.isel(time=0).values
    both = (a != 0) & (b != 0)
    assert both.mean() > 0.5
    np.testing.assert_array_equal(a[both], b[both])


# ------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"group_by": "tile"}, "group_by must be 'grid'"),
        ({"bands": ["nope"]}, "band 'nope' is in none of the selected scenes"),
        ({"bands": 3}, "bands must be a band name"),
        ({"group_by": "crs", "method": "highest:B02"}, "ranking methods"),
        ({"group_by": "crs", "method": "best"}, "unknown method 'best'"),
        ({"chunks": 0}, "chunks must be positive"),
    ],
)
def test_bad_inputs_are_one_line_errors(demo_index, kwargs, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        open_tree(demo_index, **kwargs)
    assert "\n" not in str(info.value)


def test_no_scene_is_a_no_data_error(demo_index):
    with pytest.raises(NoDataError, match="no scene with a file"):
        open_tree(demo_index, time="1999")


def test_a_filter_selects_the_scenes_of_the_tree_as_a_loop_over_the_items(demo_collection):
    _, items = demo_collection
    index = TileIndex.from_stac(items)
    keep = {i.id for i in items if i.properties.get("eo:cloud_cover", 100) < 50}
    assert 0 < len(keep) < len(items)
    tree = mosaic.open_tree(index, bands="B02", filter="eo:cloud_cover < 50")
    got = {str(s) for node in tree.subtree if node.has_data for s in node.to_dataset()["scene_id"].values}
    assert got == keep
