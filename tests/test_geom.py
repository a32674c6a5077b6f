"""Footprint geometry: reprojection to lon/lat across the antimeridian and the poles."""

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Polygon, box

from mosaic.errors import InvalidInputError
from mosaic.index.geom import bbox_to_lonlat, grid_outline, lonlat_to_crs, normalize_lonlat, to_lonlat


def _utm_box(epsg: int, lon: float, lat: float, half: float) -> Polygon:
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(lon, lat)
    return box(x - half, y - half, x + half, y + half)


def test_utm_scene_crossing_antimeridian_is_split_at_180():
    native = _utm_box(32760, 179.95, -17.0, 20_000)
    fp = to_lonlat(native, "EPSG:32760")
    assert isinstance(fp, MultiPolygon)
    east, west = sorted(fp.geoms, key=lambda p: -p.bounds[0])
    assert east.bounds[2] == pytest.approx(180.0)
    assert west.bounds[0] == pytest.approx(-180.0)
    assert 179.7 < east.bounds[0] < 179.8
    assert -179.9 < west.bounds[2] < -179.8
    # the two halves meet along the antimeridian at the same latitudes
    east_edge = [lat for lon, lat in east.exterior.coords if lon == 180.0]
    west_edge = [lat for lon, lat in west.exterior.coords if lon == -180.0]
    assert min(east_edge) == pytest.approx(min(west_edge), abs=1e-6)
    assert max(east_edge) == pytest.approx(max(west_edge), abs=1e-6)


def test_clockwise_footprint_crossing_antimeridian_is_not_the_whole_world():
    # a collar-cut UTM 60S scene straddling 180 (regression: winding misjudged -> the world's complement)
    native = shapely.from_wkt(
        "POLYGON ((822840 8125800, 811276.8407741777 8125800, 808291.1592258223 8110440, "
        "822840 8110440, 822840 8125800))"
    )
    for geom in (native, shapely.geometry.polygon.orient(native, -1.0)):
        fp = to_lonlat(geom, "EPSG:32760")
        assert isinstance(fp, MultiPolygon)
        assert fp.bounds[1] == pytest.approx(-17.0698, abs=1e-3)
        assert fp.bounds[3] == pytest.approx(-16.9291, abs=1e-3)
        assert fp.area < 0.03  # square degrees: ~15 km x 15 km, not the complement of the world


def test_reprojected_footprint_contains_every_native_corner_and_edge_point():
    native = _utm_box(32633, 15.0, 80.0, 50_000)
    fp = to_lonlat(native, "EPSG:32633")
    tr = Transformer.from_crs(32633, 4326, always_xy=True)
    pts = np.asarray(shapely.segmentize(native.exterior, 1000).coords)
    lon, lat = tr.transform(pts[:, 0], pts[:, 1])
    # densified edges: every true edge point lies on the footprint boundary to within ~1 m
    dist = shapely.distance(fp.boundary, shapely.points(lon, lat))
    assert np.max(dist) < 1e-5  # degrees; ~1 m in latitude


@pytest.mark.parametrize(("epsg", "pole"), [(3413, 90.0), (3031, -90.0)])
def test_polar_scene_enclosing_pole_reaches_pole_over_all_longitudes(epsg, pole):
    fp = to_lonlat(box(-300_000, -300_000, 300_000, 300_000), f"EPSG:{epsg}")
    assert fp.is_valid
    minx, miny, maxx, maxy = fp.bounds
    assert (minx, maxx) == (-180.0, 180.0)
    assert (maxy if pole > 0 else miny) == pytest.approx(pole)
    # every longitude near the pole is inside
    for lon in range(-180, 181, 15):
        assert fp.contains(shapely.Point(lon * 0.999, math.copysign(89.5, pole)))
    # points just inside / outside the native square are inside / outside the footprint
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    ring = np.asarray(box(-300_000, -300_000, 300_000, 300_000).exterior.coords)
    ring = shapely.segmentize(shapely.LinearRing(ring), 10_000).coords
    for scale, inside in ((0.98, True), (1.02, False)):
        xy = np.asarray(ring) * scale
        lon, lat = tr.transform(xy[:, 0], xy[:, 1])
        # intersects: a point on the +-180 seam lies on the boundary of the split footprint
        assert np.all(shapely.intersects_xy(fp, lon, lat) == inside)


def test_bbox_across_antimeridian_and_validation():
    fp = bbox_to_lonlat((170, -20, -170, -10))
    assert isinstance(fp, MultiPolygon)
    assert sorted(p.bounds for p in fp.geoms) == [(-180, -20, -170, -10), (170, -20, 180, -10)]
    with pytest.raises(InvalidInputError, match="miny"):
        bbox_to_lonlat((0, 10, 1, 5))
    with pytest.raises(InvalidInputError, match="latitudes"):
        bbox_to_lonlat((0, 10, 1, 95))
    with pytest.raises(InvalidInputError, match=r"\(minx, miny, maxx, maxy\)"):
        bbox_to_lonlat((0, 1, 2))


def test_world_wide_lonlat_boxes_stay_boxes():
    assert bbox_to_lonlat((-180, 89.9, 180, 90)).bounds == (-180, 89.9, 180, 90)
    assert bbox_to_lonlat((-180, -90, 180, 90)).area == pytest.approx(360 * 180)


def test_normalize_lonlat_handles_both_antimeridian_conventions():
    beyond = Polygon([(179, 0), (181, 0), (181, 1), (179, 1)])
    jumping = Polygon([(179, 0), (-179, 0), (-179, 1), (179, 1)])
    for geom in (beyond, jumping):
        fp = normalize_lonlat(geom)
        assert isinstance(fp, MultiPolygon)
        assert sorted(p.bounds for p in fp.geoms) == [(-180, 0, -179, 1), (179, 0, 180, 1)]


def test_lonlat_to_crs_rejoins_the_halves():
    native = _utm_box(32760, 179.95, -17.0, 20_000)
    back = lonlat_to_crs(to_lonlat(native, "EPSG:32760"), "EPSG:32760")
    assert back.geom_type == "Polygon"
    assert back.symmetric_difference(native).area / native.area < 1e-6


def test_grid_outline_follows_the_affine():
    outline = grid_outline((10.0, 0.0, 500_000.0, 0.0, -10.0, 5_000_000.0), (100, 200))
    assert outline.bounds == (500_000.0, 4_999_000.0, 502_000.0, 5_000_000.0)


@settings(max_examples=60, deadline=None)
@given(
    zone=st.integers(min_value=1, max_value=60),
    lat=st.floats(min_value=-79, max_value=83),
    dx=st.floats(min_value=-2.9, max_value=2.9),
    half=st.floats(min_value=1000, max_value=80_000),
)
def test_utm_footprints_are_valid_and_contain_their_centre(zone, lat, dx, half):
    epsg = (32600 if lat >= 0 else 32700) + zone
    lon = -180 + 6 * (zone - 1) + 3 + dx
    fp = to_lonlat(_utm_box(epsg, lon, lat, half), f"EPSG:{epsg}")
    assert fp.is_valid and not fp.is_empty
    assert -180 <= fp.bounds[0] and fp.bounds[2] <= 180
    lon_c = (lon + 180) % 360 - 180
    assert fp.buffer(1e-9).contains(shapely.Point(lon_c, lat))
    # no sliver wrapping around the globe: a scene < 200 km wide spans a few degrees at most
    widths = [p.bounds[2] - p.bounds[0] for p in getattr(fp, "geoms", [fp])]
    assert max(widths) < 30
