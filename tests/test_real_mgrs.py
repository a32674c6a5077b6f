"""The real Sentinel-2 MGRS grid as a TileIndex: CRS per tile, exact queries at seams, antimeridian, poles.

Every query is checked against an answer computed without the index: the shapefile's own records (the
antimeridian tiles are stored there already split at 180, as two records per tile) intersected with
query polygons built here, with plain ``shapely.intersects`` over all 18,376 records.
"""

import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from pyproj import Transformer
from shapely.geometry import box

from mosaic import TileIndex
from real_data import mgrs_shapefile

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "tile_indexes" / "sentinel2_grid.parquet"

sys.path.insert(0, str(ROOT / "tile_indexes"))
import build_sentinel2_grid  # noqa: E402

# The 9 tiles crossing 180 that the shapefile stores as two records (one per side of the antimeridian).
SPLIT_TILES = {"01WCN", "01WCP", "01WCQ", "01WCR", "01WCS", "01WCU", "01WCV", "60WWD", "60WWE"}
POLAR_BOX_3413 = (-1_400_000.0, -1_400_000.0, 1_400_000.0, 1_400_000.0)  # NSIDC north polar stereo, metres


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shapefile(tmp_path_factory):
    """The real grid's shapefile, unpacked from the committed archive."""
    return mgrs_shapefile(tmp_path_factory.mktemp("mgrs-shapefile"))


@pytest.fixture(scope="module")
def raw(shapefile):
    """The shapefile as read, with 2-D footprints clipped to [-180, 180] (its halves end at 180 + 1e-13)."""
    gdf = gpd.read_file(shapefile)
    geoms = shapely.clip_by_rect(shapely.force_2d(gdf.geometry.values), -180.0, -90.0, 180.0, 90.0)
    return gdf["Name"].to_numpy(), np.asarray(geoms, dtype=object)


@pytest.fixture(scope="module")
def index(shapefile):
    return build_sentinel2_grid.build(shapefile, None)


@pytest.fixture(scope="module")
def saved(index, tmp_path_factory):
    # Small row groups, so that the pushdown has something to prune.
    return index.write(tmp_path_factory.mktemp("mgrs") / "mgrs.parquet", row_group_size=512)


@pytest.fixture(scope="module")
def polar_raw(raw):
    """Records north of 50N, densified in lon/lat and projected to EPSG:3413 (for the polar query)."""
    names, geoms = raw
    north = shapely.bounds(geoms)[:, 1] > 50.0
    tr = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True)
    dense = shapely.segmentize(geoms[north], 0.01)
    projected = shapely.transform(dense, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return names[north], projected


def ids(idx: TileIndex) -> set[str]:
    return set(idx.table.column("id").to_pylist())


def lonlat_parts(bbox):
    """A lon/lat query box as planar polygons, split at 180 when minx > maxx (GeoJSON's convention)."""
    minx, miny, maxx, maxy = bbox
    if minx > maxx:
        return [box(minx, miny, 180.0, maxy), box(-180.0, miny, maxx, maxy)]
    return [box(minx, miny, maxx, maxy)]


def expected(raw, bbox) -> set[str]:
    names, geoms = raw
    hit = np.zeros(len(geoms), dtype=bool)
    for part in lonlat_parts(bbox):
        hit |= shapely.intersects(geoms, part)
    return set(names[hit])


# --------------------------------------------------------------------------------- the grid itself


def test_shapefile_holds_18376_records_of_18367_tiles(raw, index):
    names, _ = raw
    assert len(names) == 18_376
    assert len(set(names)) == 18_367
    dup = {n for n in names if (names == n).sum() > 1}
    assert dup == SPLIT_TILES
    assert len(index) == 18_367
    assert ids(index) == set(names)
    zone32n = {n for n in names if n.startswith("32") and n[2] >= "N"}
    assert len(zone32n) == 403
    assert index.crs_counts()["EPSG:32632"] == 403  # zone 32N: from Norway to Nigeria


def test_crs_follows_the_tile_name(index):
    table = index.table
    for name, crs in zip(table.column("id").to_pylist(), table.column("crs").to_pylist(), strict=True):
        zone, band = int(name[:2]), name[2]
        hemisphere = 326 if band >= "N" else 327
        assert crs == f"EPSG:{hemisphere}{zone:02d}", name
    by_id = dict(zip(table.column("id").to_pylist(), table.column("crs").to_pylist(), strict=True))
    assert by_id["31UFU"] == "EPSG:32631"
    assert by_id["55HBU"] == "EPSG:32755"
    assert by_id["01LAK"] == "EPSG:32701"  # band L: south of the equator, zone 1
    assert by_id["01WCN"] == "EPSG:32601"
    assert by_id["60WWD"] == "EPSG:32660"
    assert by_id["60LYQ"] == "EPSG:32760"
    assert by_id["33XWG"] == "EPSG:32633"  # Svalbard
    assert all(v == "footprint" for v in table.column("asset").to_pylist())
    assert table.column("href").null_count == len(index)
    with pytest.raises(ValueError):
        build_sentinel2_grid.mgrs_epsg("31IAA")


def test_antimeridian_footprints_are_split_not_globe_spanning(index, raw):
    table_ids = np.array(index.table.column("id").to_pylist())
    fps = index.footprints
    assert not shapely.has_z(fps).any()
    assert shapely.is_valid(fps).all()
    parts = shapely.get_parts(fps)
    bounds = shapely.bounds(parts)
    assert bounds[:, 0].min() >= -180.0 and bounds[:, 2].max() <= 180.0
    assert (bounds[:, 2] - bounds[:, 0]).max() < 10.5  # widest real tile: 24XWU, 10.42 degrees
    multi = set(table_ids[shapely.get_type_id(fps) == 6])
    assert multi == SPLIT_TILES
    by_id = dict(zip(table_ids, fps, strict=True))
    wcn = by_id["01WCN"]
    west, east = sorted(wcn.geoms, key=lambda p: -p.bounds[0])
    assert west.bounds[0] == pytest.approx(178.6317362, abs=1e-6) and west.bounds[2] == 180.0
    assert east.bounds[0] == pytest.approx(-180.0, abs=1e-9)
    assert east.bounds[2] == pytest.approx(-178.9005182, abs=1e-6)
    # Same area as the shapefile's two records together (nothing lost, nothing added).
    names, geoms = raw
    assert wcn.area == pytest.approx(sum(g.area for g in geoms[names == "01WCN"]), rel=1e-9)
    # The western halves reach 180 + 1e-13 in the file: stored as one clean polygon ending at 180.
    lak = by_id["01LAK"]
    assert lak.geom_type == "Polygon" and lak.bounds[2] == 180.0


# ------------------------------------------------------------------------------------ exact queries

BOXES = {
    # point-like boxes with known answers
    "amsterdam": (4.89, 52.37, 4.90, 52.38),
    "sydney": (151.20, -33.90, 151.21, -33.89),
    "longyearbyen": (15.60, 78.20, 15.65, 78.25),
    # UTM zone seams
    "seam 12E 45N": (11.5, 44.5, 12.5, 45.5),
    "seam 18E 45N": (17.5, 44.5, 18.5, 45.5),
    "seam 0E 45N": (-0.5, 44.5, 0.5, 45.5),
    "seam 24E 25S": (23.5, -25.5, 24.5, -24.5),
    "seam 138E 25S": (137.5, -25.5, 138.5, -24.5),
    "seam 66W 30S": (-66.5, -30.5, -65.5, -29.5),
    "seam 144E 38S": (143.5, -38.5, 144.5, -37.5),
    "equator seam 30E": (29.5, -0.5, 30.5, 0.5),
    # the antimeridian (minx > maxx crosses it)
    "fiji": (178.0, -20.0, -178.0, -15.0),
    "south pacific 180": (175.0, -12.0, -175.0, -8.0),
    "chukotka/alaska 65N": (179.0, 64.0, -179.0, 66.0),
    "east of 180 only": (-179.5, 64.0, -179.0, 66.0),
    "wrangel 71N": (175.0, 70.0, -175.0, 72.5),
    "aleutians 52N": (178.0, 50.0, -178.0, 53.0),
    # where a globe-spanning footprint would wrongly match
    "norwegian sea 0E 65N": (0.0, 64.0, 1.0, 66.0),
    # high latitudes
    "svalbard": (10.0, 78.0, 30.0, 80.0),
    "greenland 80-83N": (-60.0, 80.0, -20.0, 83.0),
    "franz josef land": (45.0, 79.5, 65.0, 82.0),
    "arctic ocean": (-180.0, 85.0, 180.0, 90.0),
    "antarctica": (-180.0, -90.0, 180.0, -60.0),
    "whole world": (-180.0, -90.0, 180.0, 90.0),
}

# Real values: what the index must say, on top of agreeing with the independent computation.
KNOWN = {
    "amsterdam": {"31UFU"},
    "sydney": {"56HLH"},
    "longyearbyen": {"33XWG"},
    "seam 12E 45N": {"32TPQ", "32TPR", "32TQQ", "32TQR", "33TUK", "33TUL"},
    "seam 18E 45N": {"33TXK", "33TXL", "33TYK", "33TYL", "34TCQ", "34TCR"},
    "seam 24E 25S": {"34JGS", "34JGT", "34JHS", "34JHT", "35JKM", "35JKN"},
    "seam 138E 25S": {"53JQM", "53JQN", "53JRM", "53JRN", "54JTS", "54JTT"},
    "seam 66W 30S": {"19JGG", "19JGH", "20JKM", "20JKN"},
    "fiji": set(),  # Fiji has land, but this "over land" grid has no tiles there (no 01K/60K tiles at all)
    "chukotka/alaska 65N": set("01WCM 01WCN 01WCP 01WDN 01WDP 60VWR 60VXR 60WWS 60WWT 60WWU".split()),
    "east of 180 only": {"01WCN", "01WCP", "01WDN", "01WDP"},
    "norwegian sea 0E 65N": set(),
    "arctic ocean": set(),  # the grid stops at 84.64N
    "antarctica": set(),  # and at 56.93S: no Antarctic tiles
}

# Boxes in two UTM zones: the answer must hold tiles of both.
SEAM_ZONES = {
    "seam 12E 45N": {"EPSG:32632", "EPSG:32633"},
    "seam 18E 45N": {"EPSG:32633", "EPSG:32634"},
    "seam 0E 45N": {"EPSG:32630", "EPSG:32631"},
    "seam 24E 25S": {"EPSG:32734", "EPSG:32735"},
    "seam 138E 25S": {"EPSG:32753", "EPSG:32754"},
    "seam 66W 30S": {"EPSG:32719", "EPSG:32720"},
    "seam 144E 38S": {"EPSG:32754", "EPSG:32755"},
    "equator seam 30E": {"EPSG:32635", "EPSG:32636", "EPSG:32735", "EPSG:32736"},
    "chukotka/alaska 65N": {"EPSG:32601", "EPSG:32660"},
    "wrangel 71N": {"EPSG:32601", "EPSG:32659", "EPSG:32660"},
    "aleutians 52N": {"EPSG:32601", "EPSG:32660"},
    "south pacific 180": {"EPSG:32701", "EPSG:32760"},
}


@pytest.mark.parametrize("name", list(BOXES))
def test_query_matches_exact_intersection(index, raw, name):
    bbox = BOXES[name]
    got = index.query(bbox)
    want = expected(raw, bbox)
    assert ids(got) == want
    assert len(got) == len(want)  # one row per tile, however many records the shapefile has for it
    if name in KNOWN:
        assert want == KNOWN[name]
    elif name != "whole world":
        assert want, f"{name}: land expected"
    if name in SEAM_ZONES:
        assert set(got.crs_counts()) == SEAM_ZONES[name]
    if name == "whole world":
        assert len(got) == 18_367


def random_boxes(n: int, seed: int = 20240601):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w, h = rng.uniform(0.05, 8.0), rng.uniform(0.05, 6.0)
        minx = rng.uniform(-180.0, 180.0)
        miny = rng.uniform(-62.0, 86.0 - h)
        maxx = minx + w
        if maxx > 180.0:
            maxx -= 360.0  # crosses the antimeridian
        out.append((float(minx), float(miny), float(maxx), float(miny + h)))
    # and a few that certainly cross it
    for lat in (-15.0, 10.0, 51.0, 63.0, 69.0):
        west, east = 180.0 - rng.uniform(0.5, 4.0), -180.0 + rng.uniform(0.5, 4.0)
        out.append((float(west), lat, float(east), lat + 3.0))
    return out


def test_random_boxes_match_exact_intersection(index, raw):
    boxes = random_boxes(150)
    nonempty = crossing = 0
    for bbox in boxes:
        want = expected(raw, bbox)
        assert ids(index.query(bbox)) == want, bbox
        nonempty += bool(want)
        crossing += bbox[0] > bbox[2]
    assert nonempty >= 40 and crossing >= 5  # the sample exercises real matches and the antimeridian


def polar_expected(polar_raw, bbox, margin: float = 0.0) -> set[str]:
    names, projected = polar_raw
    minx, miny, maxx, maxy = bbox
    query = box(minx - margin, miny - margin, maxx + margin, maxy + margin)
    return set(names[shapely.intersects(projected, query)])


def test_polar_query_in_epsg3413(index, polar_raw):
    want = polar_expected(polar_raw, POLAR_BOX_3413)
    # The answer does not hinge on how finely the box edges are densified: the index's lon/lat cap strays
    # up to ~170 m from the true box edges, and no tile lies within 3 km of them (in or out).
    assert polar_expected(polar_raw, POLAR_BOX_3413, -3_000.0) == want
    assert polar_expected(polar_raw, POLAR_BOX_3413, 3_000.0) == want
    got = index.query(POLAR_BOX_3413, bbox_crs="EPSG:3413")
    assert ids(got) == want
    assert len(want) == 444
    assert {"33XWG", "01WCV", "60WWE", "27XVL"} <= want  # Svalbard, both sides of 180, north Greenland
    assert set(got.crs_counts()) == {f"EPSG:326{n[:2]}" for n in want}
    assert len(got.crs_counts()) == 42  # the box around the pole meets 42 UTM zones


# ----------------------------------------------------------------------------- storage and pushdown


def test_write_read_round_trip(index, saved):
    back = TileIndex.read(saved)
    assert back.equals(index)
    assert pq.ParquetFile(saved).metadata.num_row_groups == 36


@pytest.mark.parametrize(
    "bbox,crs",
    [
        (BOXES["amsterdam"], "EPSG:4326"),
        (BOXES["seam 12E 45N"], "EPSG:4326"),
        (BOXES["seam 138E 25S"], "EPSG:4326"),
        (BOXES["chukotka/alaska 65N"], "EPSG:4326"),
        (BOXES["south pacific 180"], "EPSG:4326"),
        (BOXES["greenland 80-83N"], "EPSG:4326"),
        (BOXES["antarctica"], "EPSG:4326"),
        (POLAR_BOX_3413, "EPSG:3413"),
    ],
)
def test_pushdown_read_then_query_equals_in_memory_query(index, saved, bbox, crs):
    want = index.query(bbox, bbox_crs=crs)
    candidates = TileIndex.read(saved, bbox=bbox, bbox_crs=crs)
    got = candidates.query(bbox, bbox_crs=crs)
    assert got.equals(want)
    assert len(candidates) < len(index)


def row_groups_matching(path, bbox) -> int:
    """Row groups whose bbox-covering statistics can intersect a lon/lat box (no antimeridian)."""
    meta = pq.ParquetFile(path).metadata
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    col = {k: names.index(f"bbox.{k}") for k in ("xmin", "ymin", "xmax", "ymax")}
    minx, miny, maxx, maxy = bbox
    hits = 0
    for g in range(meta.num_row_groups):
        st = {k: meta.row_group(g).column(i).statistics for k, i in col.items()}
        assert all(s is not None and s.has_min_max for s in st.values())
        hits += bool(
            st["xmin"].min <= maxx
            and st["xmax"].max >= minx
            and st["ymin"].min <= maxy
            and st["ymax"].max >= miny
        )
    return hits


def test_row_group_statistics_allow_pruning(saved):
    # Hilbert-sorted rows: a 1-degree box falls in a few of the 36 row groups.
    for name in ("amsterdam", "seam 12E 45N", "seam 138E 25S", "seam 66W 30S"):
        assert row_groups_matching(saved, BOXES[name]) <= 4, name


def test_committed_index_is_up_to_date(index):
    if not COMMITTED.exists():
        pytest.skip("tile_indexes/sentinel2_grid.parquet not built")
    assert TileIndex.read(COMMITTED).equals(index)


def test_polygon_z_footprints_reaching_past_180_are_accepted(shapefile):
    gdf = gpd.read_file(shapefile).iloc[[453]]  # 01LAK: Polygon Z, western half ends at 180.0000000000001
    assert gdf["Name"].iloc[0] == "01LAK" and gdf.geometry.iloc[0].has_z
    index = TileIndex.from_footprints(gdf, id_column="Name", crs="EPSG:32701")
    assert index.footprints[0].bounds[2] == 180.0
