"""``mosaic serve``: tiles over HTTP from a real server process, equal to ``mosaic.load``; the map page
in a real headless chromium.

Each server is the installed console script (``mosaic serve``, uvicorn) in its own process on
127.0.0.1, killed by its own pid at the end of the module.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from odc.geo.geobox import GeoBox
from PIL import Image

import mosaic
from mosaic import TileIndex
from mosaic import synthetic as syn
from mosaic.outputs.tiles import tile_bounds, tile_geobox

pytest.importorskip("uvicorn", reason="the serve extra is not installed")

sys.path.insert(0, str(Path(__file__).parent))
from servers import free_ports

MOSAIC = Path(sys.executable).with_name("mosaic")


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The XYZ tile holding a lon/lat point at zoom ``z``."""
    n = 2**z
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return min(x, n - 1), y


class Server:
    """``mosaic serve`` in a child process; ``get`` returns (status, headers, body)."""

    def __init__(self, index: Path, *args: str):
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(Path(mosaic.__file__).parent.parent)}
        self.proc = subprocess.Popen(
            [str(MOSAIC), "serve", "--index", str(index), "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosaic serve exited: {self.proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                if self.get("/tilejson.json")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("mosaic serve did not answer in 120 s")

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=120) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def stop(self) -> str:
        """Kill the server process itself (not a wrapper) and return what it logged."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.stderr.read().decode()  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def index_file(demo_index: TileIndex, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "demo.parquet"
    demo_index.write(path)
    return path


@pytest.fixture(scope="module")
def server(index_file: Path) -> Iterator[Server]:
    s = Server(index_file, "--bands", "B02", "--rescale", "0,3000")
    yield s
    s.stop()


def npy(body: bytes) -> np.ndarray:
    return np.load(io.BytesIO(body), allow_pickle=False)


def load_on(geobox: GeoBox, index: TileIndex, **kw) -> np.ndarray:
    ds = mosaic.load(geobox=geobox, index=index, bands=["B02"], groupby=None, chunks=256, **kw)
    return ds["B02"].values[0]


def test_tiles_stitch_into_the_load_of_the_same_web_mercator_grid(server, demo_index):
    z = 12
    x0, y0 = tile_of(12.0, 45.48, z)  # the 12E UTM seam: scenes of 32N and 33N
    left, _, _, top = tile_bounds(z, x0, y0)
    _, bottom, right, _ = tile_bounds(z, x0 + 1, y0 + 1)
    grid = GeoBox.from_bbox((left, bottom, right, top), "EPSG:3857", shape=(512, 512))
    want = load_on(grid, demo_index)
    got = np.zeros((512, 512), dtype=want.dtype)
    scenes = set()
    for dy in (0, 1):
        for dx in (0, 1):
            status, headers, body = server.get(f"/tiles/{z}/{x0 + dx}/{y0 + dy}.npy")
            assert status == 200, body
            scenes.add(int(headers["x-mosaic-scenes"]))
            got[dy * 256 : (dy + 1) * 256, dx * 256 : (dx + 1) * 256] = npy(body)[0]
    np.testing.assert_array_equal(got, want)
    assert (want != 0).mean() > 0.5 and max(scenes) >= 2  # data from both zones, not an empty match


@pytest.mark.parametrize(
    ("where", "lon", "lat", "z"),
    [
        ("west of 180", 179.99, -17.05, 11),
        ("east of 180", -179.99, -17.05, 11),
        ("80N", 15.0, 80.0, 9),
    ],
)
def test_tiles_across_the_antimeridian_and_at_80n_equal_load(server, demo_index, where, lon, lat, z):
    x, y = tile_of(lon, lat, z)
    status, headers, body = server.get(f"/tiles/{z}/{x}/{y}.npy")
    assert status == 200, body
    got = npy(body)[0]
    want = load_on(tile_geobox(z, x, y), demo_index)
    np.testing.assert_array_equal(got, want)
    assert (got != 0).sum() > 1000, where  # the scene is there, on its side of the antimeridian
    assert int(headers["x-mosaic-scenes"]) >= 1


def test_png_tiles_draw_nodata_transparent_and_data_opaque(server, demo_index):
    z = 12
    x, y = tile_of(12.0, 45.48, z)
    status, headers, body = server.get(f"/tiles/{z}/{x}/{y}.png")
    assert status == 200 and headers["content-type"] == "image/png"
    rgba = np.asarray(Image.open(io.BytesIO(body)))
    values = load_on(tile_geobox(z, x, y), demo_index)
    np.testing.assert_array_equal(rgba[..., 3] == 255, values != 0)  # B02's nodata is 0
    # a grey ramp check of the colormap: rescale 0,3000 over viridis, brighter values higher in the ramp
    status, _, body = server.get(f"/tiles/{z}/{x}/{y}.png?colormap=gray&rescale=0,3000")
    gray = np.asarray(Image.open(io.BytesIO(body)))[..., 0].astype(int)
    ok = values != 0
    expected = np.round(np.clip(values[ok] / 3000, 0, 1) * 255)
    assert np.abs(gray[ok] - expected).max() <= 1
    status, headers, body = server.get(f"/tiles/{z}/{x}/{y}.webp")
    assert status == 200 and headers["content-type"] == "image/webp"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(body)).convert("RGBA")), rgba)  # lossless


def test_a_tile_far_from_every_scene_is_transparent_and_says_it_read_nothing(server):
    status, headers, body = server.get("/tiles/10/10/10.png")
    assert status == 200 and headers["x-mosaic-scenes"] == "0"
    assert (np.asarray(Image.open(io.BytesIO(body)))[..., 3] == 0).all()


def test_three_bands_are_drawn_as_rgb(server, demo_index):
    z = 12
    x, y = tile_of(15.0, 45.7, z)
    status, _, body = server.get(f"/tiles/{z}/{x}/{y}.png?bands=visual&rescale=0,255")  # a 3-band asset
    assert status == 200, body
    rgb = np.asarray(Image.open(io.BytesIO(body)))
    ds = mosaic.load(geobox=tile_geobox(z, x, y), index=demo_index, bands=["visual"], groupby=None)
    assert len(ds.data_vars) == 3
    ok = rgb[..., 3] == 255
    assert ok.mean() > 0.5
    for i, band in enumerate(ds.data_vars):
        values = ds[band].values[0].astype(float)
        np.testing.assert_array_equal(rgb[..., i][ok], np.round(np.clip(values[ok] / 255, 0, 1) * 255))


def test_time_selects_one_date(server, demo_index):
    z = 12
    x, y = tile_of(12.0, 45.48, z)
    _, _, body = server.get(f"/tiles/{z}/{x}/{y}.npy?time=2024-06-11")
    want = mosaic.load(geobox=tile_geobox(z, x, y), index=demo_index, bands=["B02"], time="2024-06-11")
    np.testing.assert_array_equal(npy(body)[0], want["B02"].values[0])
    status, _, body = server.get("/times.json")
    assert status == 200
    assert json.loads(body) == sorted({str(r.datetime)[:10] for r in demo_index.records()})


def test_bad_requests_are_400_with_the_reason_in_a_header(server):
    for path, words in [
        ("/tiles/3/99/0.png", "does not exist"),
        ("/tiles/3/1/1.gif", "format"),
        ("/tiles/3/1/1.png?rescale=3000,0", "rescale"),
        ("/tiles/3/1/1.png?colormap=nope", "colormap"),
        ("/tiles/12/2184/1458.png?bands=B02,B8A", "1 band"),
        ("/tiles/12/2184/1458.npy?bands=B03", "B03"),
    ]:
        status, headers, body = server.get(path)
        assert status == 400, (path, status, body)
        assert words in headers["x-mosaic-error"] and "\n" not in headers["x-mosaic-error"], path


def test_tilejson_wmts_and_footprints_describe_the_collection(server, demo_index):
    status, _, body = server.get("/tilejson.json?bands=B02")
    tj = json.loads(body)
    assert tj["tiles"][0].endswith("/tiles/{z}/{x}/{y}.png?bands=B02") and tj["maxzoom"] >= 12
    status, headers, body = server.get("/wmts")
    assert status == 200 and "xml" in headers["content-type"]
    root = ET.fromstring(body)
    ns = {"w": "http://www.opengis.net/wmts/1.0", "ows": "http://www.opengis.net/ows/1.1"}
    matrices = root.findall(".//w:TileMatrixSet/w:TileMatrix", ns)
    assert len(matrices) == tj["maxzoom"] + 1
    assert float(matrices[0].find("w:ScaleDenominator", ns).text) == pytest.approx(559082264.0287178)
    status, _, body = server.get("/footprints.geojson")
    fc = json.loads(body)
    assert {f["properties"]["id"] for f in fc["features"]} == {r.id for r in demo_index.records()}


def test_a_tile_needing_more_scenes_than_allowed_is_refused(index_file):
    s = Server(index_file, "--bands", "B02", "--rescale", "0,3000", "--max-scenes", "1")
    try:
        x, y = tile_of(12.0, 45.48, 12)
        status, headers, _ = s.get(f"/tiles/12/{x}/{y}.png")
        assert status == 413
        assert "max_scenes=1" in headers["x-mosaic-error"] and "zoom in" in headers["x-mosaic-error"]
    finally:
        s.stop()


def test_a_failed_read_is_a_502_naming_the_scene_not_a_transparent_tile(demo_collection, tmp_path):
    root, _ = demo_collection
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    index = TileIndex.from_files(sorted(copy.rglob("S33-mid-20240601*/B02.tif")))
    path = tmp_path / "one.parquet"
    index.write(path)
    s = Server(path, "--rescale", "0,3000")
    try:
        for tif in copy.rglob("S33-mid-20240601*/B02.tif"):
            tif.write_bytes(tif.read_bytes()[:5000])  # truncated: the tiles cannot be read
        x, y = tile_of(15.0, 45.7, 12)
        status, headers, body = s.get(f"/tiles/12/{x}/{y}.png")
    finally:
        log = s.stop()
    assert status == 502, body
    assert "S33-mid-20240601" in headers["x-mosaic-error"]
    assert "S33-mid-20240601" in log


def test_the_map_page_shows_the_mosaic_in_headless_chromium(server, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    shot = tmp_path / "map.png"
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1024,768",
            "--virtual-time-budget=30000",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            server.url + "/#13/45.48/12.0",  # the 12E seam, zoom 13
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shot.exists(), proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if ":ERROR:" in line or "Uncaught" in line], console
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    background = np.array([0x1D, 0x23, 0x30])
    drawn = np.abs(image - background).sum(axis=2) > 30
    # the view is inside the seam scenes' union: the map is mostly mosaic, and its left and right
    # halves both show data (32N scenes west of the seam, 33N east of it)
    assert drawn[:, :512].mean() > 0.5 and drawn[:, 512:700].mean() > 0.5, drawn.mean()
    status, _, page = server.get("/")
    assert status == 200 and "leaflet.js" in page.decode()


def test_a_quality_mask_applies_to_tiles_as_to_load(tmp_path):
    specs = [s for s in syn.demo_specs(192, clouds=True) if "seam12" in s.id]
    index = TileIndex.from_stac(syn.make_collection(specs, tmp_path / "cloudy"))
    path = tmp_path / "cloudy.parquet"
    index.write(path)
    s = Server(path, "--bands", "B02", "--rescale", "0,3000", "--mask", "sentinel2-scl")
    try:
        z = 11
        x, y = tile_of(12.0, 45.48, z)
        status, _, body = s.get(f"/tiles/{z}/{x}/{y}.npy")
    finally:
        s.stop()
    assert status == 200, body
    grid = tile_geobox(z, x, y)
    masked = load_on(grid, index, mask="sentinel2-scl")
    np.testing.assert_array_equal(npy(body)[0], masked)
    assert (load_on(grid, index) != masked).sum() > 100  # the mask changed the tile: clouds were there


def test_point_gives_the_time_series_of_mosaic_sample(server, demo_index):
    status, _, body = server.get("/point?lon=12.0&lat=45.48")
    assert status == 200, body
    answer = json.loads(body)
    want = mosaic.sample([(12.0, 45.48)], index=demo_index, bands=["B02"])
    assert [row["time"][:10] for row in answer["series"]] == [str(t)[:10] for t in want["time"].values]
    assert [row["B02"] for row in answer["series"]] == [int(v) for v in want["B02"].values[:, 0]]
    assert len(answer["series"]) == 3  # the seam's three dates
    status, _, body = server.get("/point?lon=-30&lat=0")  # the Atlantic: no scene
    assert status == 200 and json.loads(body)["series"] == []
    for query in ("lon=x&lat=1", "lon=200&lat=0", "lat=1"):
        status, headers, _ = server.get(f"/point?{query}")
        assert status == 400 and "lon" in headers["x-mosaic-error"], query


def test_filter_and_sortby_select_and_order_the_scenes_of_tiles(index_file, demo_index):
    s = Server(
        index_file,
        "--bands",
        "B02",
        "--rescale",
        "0,3000",
        "--filter",
        "eo:cloud_cover < 70",
        "--sortby",
        "eo:cloud_cover",
    )
    try:
        z = 12
        x, y = tile_of(12.0, 45.48, z)
        status, _, body = s.get(f"/tiles/{z}/{x}/{y}.npy")
    finally:
        s.stop()
    assert status == 200, body
    options = {"filter": "eo:cloud_cover < 70", "sortby": "eo:cloud_cover"}
    want = load_on(tile_geobox(z, x, y), demo_index, **options)
    np.testing.assert_array_equal(npy(body)[0], want)
    assert (load_on(tile_geobox(z, x, y), demo_index) != want).sum() > 100  # not the default order
