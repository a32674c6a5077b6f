"""The ``mosaic`` console script, run for real in a subprocess, and the demo job."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import click
import pytest
from click.testing import CliRunner

import mosaic as api
from mosaic import synthetic
from mosaic.cli import cli
from mosaic.cli.options import (
    PLAN_PARAMETERS,
    parse_bbox,
    parse_chunks,
    parse_crs,
    parse_dtype,
    parse_resolution,
)
from mosaic.demo import DEMO_BBOX, DEMO_RESOLUTION, run_demo

MOSAIC = Path(sys.executable).parent / "mosaic"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEAM = ["--bbox", "11.88,45.40,12.12,45.58", "--crs", "EPSG:4326", "--resolution", "0.0002"]
PATTERN = r"(?P<id>[\w-]+-(?P<datetime>\d{8}))/(?P<asset>\w+)\.tif$"


def mosaic(
    *args: object, cwd: Path | None = None, index_env: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (with ``$MOSAIC_INDEX`` set to ``index_env`` only)."""
    env = {k: v for k, v in os.environ.items() if k != "MOSAIC_INDEX"}
    env["MPLBACKEND"] = "Agg"
    if index_env is not None:
        env["MOSAIC_INDEX"] = str(index_env)
    return subprocess.run(
        [str(MOSAIC), *map(str, args)], capture_output=True, text=True, timeout=180, env=env, cwd=cwd
    )


def mosaic_all(*calls: tuple[object, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent invocations side by side (each pays the interpreter start-up)."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        return list(pool.map(lambda args: mosaic(*args), calls))


def ok(*args: object) -> str:
    proc = mosaic(*args)
    assert proc.returncode == 0, f"mosaic {args} failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def items(root: Path) -> list:
    """The demo collection, generated once; the demo tests below reuse it (same folder)."""
    return synthetic.demo_collection(root / "demo" / "collection")


@pytest.fixture(scope="module")
def collection(root: Path, items: list) -> Path:
    return root / "demo" / "collection"


@pytest.fixture(scope="module")
def stac_index(root: Path, collection: Path) -> Path:
    out = root / "stac.parquet"
    stdout = ok("index", "build", collection / "items.json", "-o", out)
    assert out.exists() and "114 asset(s) of 19 scene(s)" in stdout
    return out


def test_script_is_installed() -> None:
    assert MOSAIC.exists(), f"{MOSAIC} missing: run `pip install -e .`"


HELP = {
    (): ["index", "plan", "demo", "--verbose"],
    ("index",): ["build", "info"],
    ("index", "build"): [
        "SOURCES",
        "--stac",
        "--assets",
        "--pattern",
        "--stac-url",
        "--collection",
        "--bbox",
        "--datetime",
        "--on-error",
        "--workers",
        "--quiet",
    ],
    ("index", "info"): ["--index", "--json"],
    ("plan",): [
        *("--index", "--bbox", "--bbox-crs", "--crs", "--resolution", "--time", "--bands", "--method"),
        *("--resampling", "--groupby", "--dtype", "--nodata", "--chunks", "--png", "--explain", "--json"),
    ],
    ("regrid",): ["--index", "--groupby", "--dtype", "--nodata", "--chunks", "--output", "--workers"],
    ("gti", "export"): ["--index", "--output", "--crs", "--resolution", "--warp"],
    ("tree", "export"): ["--index", "--output", "--bbox", "--time", "--bands", "--format", "--mixed"],
    ("demo",): ["--out"],
}


def test_help_of_every_command() -> None:
    for command, proc in zip(HELP, mosaic_all(*((*c, "--help") for c in HELP)), strict=True):
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"Usage: mosaic {' '.join(command)}".rstrip())
        for word in HELP[command]:
            assert word in proc.stdout, (command, word)


def command_paths(command: click.Command = cli, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under ``command``: (), ("index",), ("index", "build"), ..."""
    paths = [path]
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            paths += command_paths(sub, (*path, name))
    return paths


# ``mosaic`` then words: a command path, a Python name, or prose ("a mosaic to ...")
MENTION = re.compile(r"(?P<before>^[ \t]*|.)\bmosaic(?P<words>(?: [a-z][\w-]*)+)", re.M)


def bad_mentions(text: str) -> list[str]:
    """The ``mosaic <word> ...`` in ``text`` that name a command which does not exist.

    A mention is checked when its first word is a command, a name of the Python API (``mosaic load``
    reads as a command), or when it is quoted or starts an example line (indented under "Examples:");
    prose ("a mosaic to", a wrapped line starting "mosaic grid") is not.
    """
    names = set(api.__all__)
    bad = []
    for match in MENTION.finditer(text):
        words = match["words"].split()
        line_start = match.start() == 0 or text[match.start() - 1] == "\n"
        example = line_start and match["before"].startswith("    ") and not match["before"].strip()
        quoted = match["before"] in ("'", '"', "`") or example
        if words[0] not in cli.commands and words[0] not in names and not quoted:
            continue
        command: click.Command = cli
        for i, word in enumerate(words):
            if not isinstance(command, click.Group):
                break  # arguments of a command
            if word not in command.commands:
                bad.append(" ".join(["mosaic", *words[: i + 1]]))
                break
            command = command.commands[word]
    return bad


def test_help_names_only_commands_that_exist() -> None:
    runner = CliRunner()
    paths = command_paths()
    assert ("gti", "export") in paths and ("index", "info") in paths and ("serve",) in paths
    assert ("tree", "export") in paths and ("sample",) in paths
    assert ("auth", "check") in paths and ("login",) in paths and len(paths) == 16
    for path in paths:
        result = runner.invoke(cli, [*path, "--help"], prog_name="mosaic")
        assert result.exit_code == 0, result.output
        assert not bad_mentions(result.output), (path, bad_mentions(result.output))
    # the check itself: what it catches and what it lets through
    assert bad_mentions("as mosaic load, and 'mosaic index show' or\n    mosaic gti import x") == [
        "mosaic load",
        "mosaic index show",
        "mosaic gti import",
    ]
    assert bad_mentions("a mosaic to Zarr; 'mosaic index build SOURCES', mosaic.load\n  mosaic grid") == []


def test_index_is_given_the_same_way_to_every_command(tmp_path: Path, stac_index: Path) -> None:
    """``--index PATH``, else ``$MOSAIC_INDEX``, for each command that reads an index."""
    readers = {
        path
        for path in command_paths()
        if path and path[-1] in ("info", "plan", "regrid", "export", "sample", "serve")
    }
    assert readers == {
        ("index", "info"),
        ("plan",),
        ("regrid",),
        ("gti", "export"),
        ("tree", "export"),
        ("sample",),
        ("serve",),
    }
    for path in readers:
        command: click.Command = cli
        for word in path:
            command = command.commands[word]  # type: ignore[attr-defined]
        option = next(p for p in command.params if p.name == "index")
        assert (
            isinstance(option, click.Option)
            and option.opts == ["--index"]
            and option.envvar == "MOSAIC_INDEX"
        )
        assert not any(isinstance(p, click.Argument) for p in command.params)
    calls = [
        ("index", "info"),
        ("plan", *SEAM),
        ("regrid", *SEAM, "-o", tmp_path / "x.zarr"),
        ("gti", "export", *SEAM, "-o", tmp_path / "x.gti.gpkg"),
        ("tree", "export", "-o", tmp_path / "x.json"),
        ("sample", "--points", tmp_path / "points.csv", "-o", tmp_path / "series.csv"),
        ("serve",),
    ]
    for args, proc in zip(calls, mosaic_all(*calls), strict=True):
        assert (
            proc.returncode == 2 and "no tile index: pass --index PATH or set MOSAIC_INDEX" in proc.stderr
        ), args
    # $MOSAIC_INDEX names the index when --index is not given
    info, planned = mosaic_env(
        stac_index, ("index", "info", "--json"), ("plan", *SEAM, "--time", "2024-06-01", "--json")
    )
    assert info["rows"] == 114 and info["path"] == str(stac_index)
    assert planned["scenes"] == 2 and planned["index"] == str(stac_index)
    out = tmp_path / "env.gti.gpkg"
    proc = mosaic("gti", "export", *SEAM, "--bands", "B02", "-o", out, index_env=stac_index)
    assert proc.returncode == 0 and out.exists(), proc.stderr


def mosaic_env(index: Path, *calls: tuple[object, ...]) -> list[dict]:
    """The JSON outputs of commands run with ``$MOSAIC_INDEX`` set to ``index``."""
    outputs = []
    for args in calls:
        proc = mosaic(*args, index_env=index)
        assert proc.returncode == 0, proc.stderr
        outputs.append(json.loads(proc.stdout))
    return outputs


def test_plan_and_regrid_take_every_plan_option() -> None:
    """One list of plan options reaches both commands and is the API's keyword arguments."""
    import inspect

    from mosaic.cli.plan import plan
    from mosaic.cli.regrid import regrid

    expected = {"index", "bbox", "bbox_crs", "crs", "resolution", "time", "bands", "method", "resampling"}
    assert set(PLAN_PARAMETERS) >= expected | {"groupby", "dtype", "nodata", "anchor", "src_nodata"}
    for command in (plan, regrid):
        assert set(PLAN_PARAMETERS) <= {p.name for p in command.params}, command.name
    for function in (api.plan, api.regrid):
        assert set(PLAN_PARAMETERS) <= set(inspect.signature(function).parameters), function


def test_plan_groupby_dtype_nodata(stac_index: Path) -> None:
    base = ("plan", "--index", stac_index, *SEAM, "--time", "2024-06", "--bands", "B02,WVP", "--json")
    default, changed = (
        json.loads(proc.stdout)
        for proc in mosaic_all(base, (*base, "--groupby", "none", "--dtype", "float32", "--nodata", "-1"))
    )
    assert default["groups"] == ["2024-06-01", "2024-06-11", "2024-06-21"]
    assert default["band_types"] == {
        "B02": {"dtype": "uint16", "nodata": 0},
        "WVP": {"dtype": "float32", "nodata": "nan"},
    }
    assert changed["groups"] == ["all"] and changed["shape"] == [1, 900, 1200]
    assert changed["band_types"] == {n: {"dtype": "float32", "nodata": -1} for n in ("B02", "WVP")}
    text = ok(*base[:-1], "--groupby", "none", "--nodata", "nan", "--dtype", "float64")
    assert re.search(r"^bands:\s+B02 \(float64, nodata nan\), WVP \(float64, nodata nan\)$", text, re.M)
    bad = mosaic(*base, "--dtype", "uint17")
    assert bad.returncode == 2 and "'uint17' is not a NumPy dtype" in bad.stderr


def test_plan_and_regrid_anchor_native_and_src_nodata(tmp_path: Path) -> None:
    """Real fill-0 files without a nodata tag: their own grid, and 0 declared as nodata at load."""
    import numpy as np
    import rasterio
    import xarray as xr

    import real_data

    paths = real_data.fill_zero_scenes(tmp_path / "scenes")
    index = tmp_path / "fill0.parquet"
    ok("index", "build", *paths, "-o", index)
    with rasterio.open(paths[0]) as src:
        bounds = src.bounds
    area = ",".join(str(v) for v in bounds)
    base = ("--index", index, "--bbox", area, "--bbox-crs", "EPSG:31985", "--crs", "EPSG:31985")
    facts = json.loads(ok("plan", *base, "--anchor", "native", "--src-nodata", "0", "--json"))
    assert facts["bounds"] == pytest.approx(list(bounds), abs=1e-6)  # exactly the scene's own grid
    assert facts["band_types"] == {"data": {"dtype": "uint8", "nodata": 0}}
    edge = json.loads(ok("plan", *base, "--json"))
    assert edge["bounds"][0] != pytest.approx(bounds[0], abs=1)  # the default grid is half a pixel off
    out = tmp_path / "last.zarr"
    extra = ("--groupby", "none", "--method", "last", "--anchor", "native", "--src-nodata", "0")
    ok("regrid", *base, *extra, "-o", out, "--quiet")
    with xr.open_zarr(out, mask_and_scale=False) as ds:
        written = ds.data.values[0]
    expected = api.load(
        bounds, "EPSG:31985", index=str(index), bbox_crs="EPSG:31985", groupby=None, method="last",
        anchor="native", src_nodata=0,
    ).data.values[0]  # fmt: skip
    np.testing.assert_array_equal(written, expected)
    with rasterio.open(paths[0]) as src:
        a = src.read(1)
    assert (written[a != 0] != 0).all()  # b's fill (0, now nodata) never paints over a's data
    for bad, message in (("--anchor", "middle"), ("--src-nodata", "B01")):
        proc = mosaic("plan", *base, bad, message)
        assert proc.returncode == 2 and "Invalid value for '--" in proc.stderr, proc.stderr


# ----------------------------------------------------------------------------------------------- index


class _StacApi(BaseHTTPRequestHandler):
    """A minimal STAC API: landing page, GET and POST /search (collections, bbox, datetime, paging)."""

    items: ClassVar[list[dict]] = []
    searches: ClassVar[list[dict]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        url = urllib.parse.urlsplit(self.path)
        if url.path in ("", "/"):
            return self._send(
                {
                    "type": "Catalog",
                    "id": "test-api",
                    "description": "loopback STAC API",
                    "stac_version": "1.0.0",
                    "conformsTo": [
                        "https://api.stacspec.org/v1.0.0/core",
                        "https://api.stacspec.org/v1.0.0/item-search",
                    ],
                    "links": [
                        {"rel": "self", "href": base + "/"},
                        {"rel": "root", "href": base + "/"},
                        {
                            "rel": "search",
                            "href": base + "/search",
                            "type": "application/geo+json",
                            "method": "GET",
                        },
                    ],
                }
            )
        if url.path != "/search":
            self.send_error(404)
            return None
        return self._search(dict(urllib.parse.parse_qsl(url.query)), base, post=False)

    def do_POST(self) -> None:
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        q = {k: ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in body.items()}
        return self._search(q, base, post=True)

    def _search(self, q: dict, base: str, *, post: bool) -> None:
        type(self).searches.append(q)
        hits = [i for i in self.items if self._matches(i, q)]
        limit, start = int(q.get("limit", 10)), int(q.get("token", 0))
        page = hits[start : start + limit]
        links = []
        if start + limit < len(hits):
            nxt = dict(q, token=str(start + limit))
            if post:
                links.append({"rel": "next", "href": f"{base}/search", "method": "POST", "body": nxt})
            else:
                query = urllib.parse.urlencode(nxt)
                links.append({"rel": "next", "href": f"{base}/search?{query}", "method": "GET"})
        body = {"type": "FeatureCollection", "features": page, "links": links, "numberMatched": len(hits)}
        return self._send(body)

    @staticmethod
    def _matches(item: dict, q: dict) -> bool:
        if "collections" in q and item.get("collection") not in q["collections"].split(","):
            return False
        if "bbox" in q:
            w, s, e, n = map(float, q["bbox"].split(","))
            x0, y0, x1, y1 = item["bbox"]
            if x0 > e or x1 < w or y0 > n or y1 < s:
                return False
        if "datetime" in q:
            start, _, end = q["datetime"].partition("/")
            when = item["properties"]["datetime"]
            if (start not in ("", "..") and when < start) or (end not in ("", "..") and when > end):
                return False
        return True


@pytest.fixture
def stac_api(items: list) -> Iterator[str]:
    """A real STAC API on 127.0.0.1 serving the demo Items (in collection "demo")."""
    _StacApi.items = [dict(i.to_dict(), collection="demo") for i in items]
    _StacApi.searches = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StacApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_index_build_from_a_stac_api_search(root: Path, stac_api: str) -> None:
    out = root / "api.parquet"
    stdout = ok(
        "index", "build", "--stac-url", stac_api, "--collection", "demo", "--bbox", "11.8,45.3,12.2,45.7",
        "--datetime", "2024-06-01T00:00:00Z/2024-06-01T23:59:59Z", "--assets", "B02", "-o", out,
    )  # fmt: skip
    assert "wrote" in stdout
    info = json.loads(ok("index", "info", "--index", out, "--json"))
    assert info["rows"] == 2 and set(info["crs"]) == {"EPSG:32632", "EPSG:32633"}  # the 12E seam pair
    searches = _StacApi.searches
    assert searches and all(
        s["collections"] == "demo" and s["bbox"] == "11.8,45.3,12.2,45.7" for s in searches
    )
    every = root / "api-all.parquet"
    ok("index", "build", "--stac-url", stac_api, "--collection", "demo", "-o", every)  # paged: 19 Items
    assert json.loads(ok("index", "info", "--index", every, "--json"))["scenes"] == 19
    bad = mosaic("index", "build", "--stac-url", "http://127.0.0.1:9/", "-o", root / "x.parquet")
    assert "STAC API search failed" in one_error_line(bad)


def test_index_build_cogs_then_info(root: Path, collection: Path) -> None:
    out = root / "cogs.parquet"
    stdout = ok(
        "index", "build", f"{collection}/*-seam12-*/B02.tif", "--pattern", PATTERN, "-o", out, "--workers", 2
    )
    assert "6 asset(s) of 6 scene(s)" in stdout
    text = ok("index", "info", "--index", out)
    assert re.search(r"rows:\s+6 assets of 6 scenes", text)
    assert re.search(r"EPSG:32632\s+3", text) and re.search(r"EPSG:32633\s+3", text)
    assert "2024-06-01T00:00:00Z .. 2024-06-21T00:00:00Z" in text
    assert "uint16 (6)" in text and "B02 (6)" in text


def test_index_build_directory(root: Path, collection: Path) -> None:
    out = root / "dir.parquet"
    stdout = ok("index", "build", collection / "S33-mid-20240601", "--pattern", PATTERN, "-o", out)
    assert "6 asset(s) of 1 scene(s) in 1 CRS (EPSG:32633 (6))" in stdout
    assert "2024-06-01T00:00:00Z .. 2024-06-01T00:00:00Z" in stdout


def test_index_build_stac_then_info_json(stac_index: Path, items: list) -> None:
    facts = json.loads(ok("index", "info", "--index", stac_index, "--json"))
    expected_crs = Counter()
    for item in items:
        expected_crs[item.properties["proj:code"]] += len(item.assets)
    assert facts["rows"] == 114 == sum(expected_crs.values())
    assert facts["scenes"] == len(items) == 19
    assert facts["crs"] == dict(expected_crs)
    first, last = min(i.datetime for i in items), max(i.datetime for i in items)
    assert facts["time_range"] == [f"{first:%Y-%m-%dT%H:%M:%S}Z", f"{last:%Y-%m-%dT%H:%M:%S}Z"]
    west, south, east, north = facts["extent"]
    assert (west, east, north) == (-180.0, 180.0, 90.0)  # antimeridian scenes; a scene holds the pole
    assert -90 < south < -89.5
    assert facts["assets"] == {name: 19 for name in ("AOT", "B02", "B8A", "WVP", "quality", "visual")}
    assert facts["dtypes"] == {"float32": 38, "uint8": 38, "uint16": 19, "int16": 19}


def test_index_build_stac_assets(root: Path, collection: Path) -> None:
    out = root / "b02.parquet"
    stdout = ok("index", "build", collection / "items.json", "--assets", "B02,B8A", "-o", out)
    assert "38 asset(s) of 19 scene(s)" in stdout and out.exists()
    assert ok("index", "build", collection / "items.json", "--assets", "B02", "-o", out, "--quiet") == ""


# ------------------------------------------------------------------------------------------------ plan


def test_plan_json(stac_index: Path) -> None:
    facts = json.loads(
        ok("plan", "--index", stac_index, *SEAM, "--time", "2024-06-01", "--bands", "B02,B8A", "--json")
    )
    minx, miny, maxx, maxy = DEMO_BBOX
    rows, cols = round((maxy - miny) / DEMO_RESOLUTION), round((maxx - minx) / DEMO_RESOLUTION)
    assert facts["shape"] == [1, rows, cols] == [1, 900, 1200]
    assert facts["scenes"] == 2 and facts["reads"] > 0 and facts["nonempty_chunks"] > 0
    assert facts["source_crs"] == ["EPSG:32632", "EPSG:32633"]
    assert facts["bands"] == ["B02", "B8A"] and facts["groups"] == ["2024-06-01"]


def test_plan_text_and_png(root: Path, stac_index: Path) -> None:
    png = root / "plan.png"
    text = ok(
        "plan",
        "--index",
        stac_index,
        *SEAM,
        "--time",
        "2024-06",
        "--bands",
        "B02",
        "--chunks",
        512,
        "--png",
        png,
    )
    assert re.search(r"scenes:\s+6 from EPSG:32632, EPSG:32633", text)
    assert "3 x 900 x 1200" in text and str(png) in text
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000


# ---------------------------------------------------------------------------------------------- errors


def test_missing_index_is_one_line(root: Path) -> None:
    line = one_error_line(mosaic("index", "info", "--index", root / "nope.parquet"))
    assert "nope.parquet" in line and "does not exist" in line


def test_verbose_shows_traceback(root: Path) -> None:
    proc = mosaic("--verbose", "index", "info", "--index", root / "nope.parquet")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "IndexFormatError" in proc.stderr


def test_missing_source_file(root: Path) -> None:
    line = one_error_line(mosaic("index", "build", root / "nope.tif", "-o", root / "x.parquet"))
    assert "nope.tif" in line and "does not exist" in line
    assert not (root / "x.parquet").exists()


def test_bad_bbox_is_a_clear_usage_error(stac_index: Path) -> None:
    cases = {"1,2,3": "has 3 number(s); give four", "10,50,12,40": "miny (50) must be below maxy (40)"}
    calls = [("plan", "--index", stac_index, "--bbox", bbox, "--crs", "EPSG:4326") for bbox in cases]
    for message, proc in zip(cases.values(), mosaic_all(*calls), strict=True):
        assert proc.returncode == 2
        assert "Invalid value for '--bbox'" in proc.stderr and message in proc.stderr
        assert "Traceback" not in proc.stderr


def test_negative_bbox_parses_and_empty_area_is_one_line(stac_index: Path) -> None:
    proc = mosaic(
        "plan", "--index", stac_index, "--bbox", "-10,40,-5,45", "--crs", "EPSG:4326", "--resolution", 0.01
    )
    assert "no scene" in one_error_line(proc)


def test_option_parsers() -> None:
    assert parse_bbox("-10,40,5,50") == (-10.0, 40.0, 5.0, 50.0)
    assert parse_bbox(" 170, -20 ,-170,-10") == (170.0, -20.0, -170.0, -10.0)  # across the antimeridian
    assert parse_crs("32633") == "EPSG:32633" and parse_crs("UTM") == "utm"
    assert parse_resolution("10") == 10.0 and parse_resolution("10,20") == (10.0, 20.0)
    assert parse_chunks("512") == 512 and parse_chunks("256,512") == (256, 512)
    for bad in ("nan,1,2,3", "1,1,1,2", "0,0,1"):
        with pytest.raises(click.BadParameter):
            parse_bbox(bad)
    assert parse_dtype("float32") == "float32" and parse_dtype(" u2") == "uint16"
    bad_values = (
        (parse_resolution, "-1"),
        (parse_chunks, "1.5"),
        (parse_crs, "EPSG:99999"),
        (parse_dtype, "U8"),
    )
    for parser, bad in bad_values:
        with pytest.raises(click.BadParameter):
            parser(bad)


# ------------------------------------------------------------------------------------------------ demo


def test_run_demo_report(root: Path, items: list) -> None:
    report = run_demo(root / "demo", quiet=True)
    assert report.collection_scenes == 19 and report.collection_assets == 114
    assert len(report.collection_crs) == 7
    assert report.source_crs == ("EPSG:32632", "EPSG:32633")  # across the 12E seam
    assert len(report.scenes_used) == 2
    assert report.planned_reads > 0 and report.reads >= report.planned_reads
    assert report.shape == (1, 900, 1200)
    assert [e.band for e in report.errors] == ["B02", "B8A"]
    for err in report.errors:
        assert 0.5 < err.valid_fraction < 1
        assert err.mean_abs_error < 2
        assert err.max_abs_error < 6
    assert report.mean_abs_error < 2 and report.max_abs_error < 6
    assert report.gti_path is not None and report.gti_path.exists() and "GTI export" in report.format()
    assert report.gti_identical is not None and report.gti_identical >= 0.995  # GDAL reads the mosaic
    for path in (report.index_path, report.quicklook_path, report.plan_path, report.zarr_path):
        assert path.exists(), path
    assert report.quicklook_path.read_bytes().startswith(PNG_MAGIC)

    import rioxarray  # noqa: F401
    import xarray as xr

    with xr.open_zarr(report.zarr_path, decode_coords="all") as ds:
        assert ds.rio.crs.to_epsg() == 4326 and report.zarr_crs == "EPSG:4326"
        assert dict(ds.sizes) == {"time": 1, "y": 900, "x": 1200}
        assert set(ds.data_vars) == {"B02", "B8A"}


def test_demo_command(root: Path, items: list) -> None:
    out = ok("demo", "--out", root / "demo")
    mean = float(re.search(r"^mean abs error\s+([\d.]+)", out, re.M).group(1))
    largest = float(re.search(r"^max abs error\s+([\d.]+)", out, re.M).group(1))
    assert mean < 2 and largest < 6
    assert re.search(r"scenes used\s+2 from 2 CRSs", out)
    assert str(root / "demo" / "mosaic.zarr") in out and str(root / "demo" / "quicklook.png") in out
