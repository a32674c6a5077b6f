"""What people see of plans and indexes: reprs, notebook HTML, ``plan.explain`` and ``plan.plot``."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET

import matplotlib
import pytest

import mosaic
from mosaic._repr import human_bytes
from mosaic.plot import axis_labels
from real_data import DEM, L7

matplotlib.use("Agg")

SEAM12 = (11.88, 45.40, 12.12, 45.58)


def cells(page: str) -> dict[str, list[str]]:
    """The rows of a repr table (it must be well-formed XHTML): header -> the lines of its cell."""
    table = ET.fromstring(page)  # raises on an unclosed tag or an unescaped <, > or &
    out = {}
    for row in table.iter("tr"):
        th, td = row.find("th"), row.find("td")
        out[th.text] = [td.text or "", *((br.tail or "") for br in td.findall("br"))]
    return out


@pytest.fixture(scope="module")
def big_plan(demo_index: mosaic.TileIndex) -> mosaic.Plan:
    """All bands of the 6 seam scenes of June in 32 x 32 chunks: over 20,000 chunk tasks."""
    return mosaic.plan(SEAM12, "EPSG:4326", "2024-06", index=demo_index, resolution=0.0002, chunks=32)


def test_plan_repr_stays_a_few_lines_whatever_the_plan_size(big_plan):
    summary = big_plan.summary()
    assert len(big_plan.tasks) > 20_000  # the dataclass repr of this plan was 8.9 MB
    text = repr(big_plan)
    assert str(big_plan) == text and len(text) < 600 and text.count("\n") == 3
    assert text.startswith(
        "<Plan: 6 scenes in 2 CRSs (EPSG:32632: 3, EPSG:32633: 3); 3 time steps, 2024-06-01"
    )
    assert "grid 900 x 1200 px in EPSG:4326, pixel 0.0002; chunks 32 x 32, " in text
    assert "B02 uint16" in text and ", +2 more" in text  # 8 bands: the first 6, then how many more
    assert f"{summary['reads']} reads, ~{human_bytes(summary['estimated_read_bytes'])} read, " in text
    assert f"{human_bytes(summary['output_bytes'])} output; first, nearest>" in text


def test_plan_html_is_a_valid_escaped_table_of_the_same_facts(big_plan):
    summary = big_plan.summary()
    page = big_plan._repr_html_()
    assert len(page) < 5_000
    table = cells(page)
    assert table["scenes"] == ["6"]
    assert table["CRSs (scenes)"] == ["EPSG:32632: 3", "EPSG:32633: 3"]
    assert table["time steps"][0].startswith("3: 2024-06-01")
    assert table["grid"] == ["3 x 900 x 1200 (time, y, x) in EPSG:4326, pixel 0.0002"]
    assert "B02: uint16, nodata 0" in table["bands"] and "WVP: float32, nodata nan" in table["bands"]
    assert len(table["bands"]) == len(big_plan.bands) == 8
    assert table["reads"][0].startswith(f"{summary['reads']} windows of ")
    assert table["bytes read"] == [f"~{human_bytes(summary['estimated_read_bytes'])}"]
    assert table["output bytes"] == [human_bytes(summary["output_bytes"])]


def test_index_repr_and_html(demo_index):
    text = repr(demo_index)
    assert text.startswith(
        "<TileIndex: 114 assets (AOT, B02, B8A, WVP, quality, visual) of 19 scenes in 7 CRSs ("
    )
    assert text.endswith(", +4 more), 2024-06-01 .. 2024-12-15>") and len(text) < 300
    table = cells(demo_index._repr_html_())
    assert table["rows"] == ["114 assets of 19 scenes"]
    crs = dict(line.rsplit(": ", 1) for line in table["CRSs (assets)"])
    assert len(crs) == 7 and sum(map(int, crs.values())) == 114 and crs["EPSG:32633"] == "54"
    when = [r.datetime for r in demo_index.records()]
    assert table["time range"] == [f"{min(when):%Y-%m-%dT%H:%M:%S}Z .. {max(when):%Y-%m-%dT%H:%M:%S}Z"]
    assert table["assets"] == [f"{a}: 19" for a in ("AOT", "B02", "B8A", "WVP", "quality", "visual")]
    assert sum(int(line.split(": ")[1]) for line in table["dtypes"]) == 114

    skipped = [mosaic.Skipped("x.tif", "no CRS")]
    some = mosaic.TileIndex.from_records(demo_index.records()[:2], skipped=skipped)
    assert repr(some).endswith(", 1 input skipped>")
    assert cells(some._repr_html_())["skipped"] == ["x.tif: no CRS"]
    assert repr(mosaic.TileIndex.from_records([])) == "<TileIndex: empty>"


def test_html_escapes_names_and_paths(demo_index):
    rows = [
        dataclasses.replace(r, id=f"<script>{r.id}</script>", asset="B&<b>")
        for r in demo_index.records()
        if r.asset == "B02"
    ]
    odd = mosaic.TileIndex.from_records(rows, source="runs/<i>june</i>&co.parquet")
    page = odd._repr_html_()
    assert "<script>" not in page and "<b>" not in page and "<i>" not in page
    assert "&lt;script&gt;" not in page  # scene ids are counted, not listed
    table = cells(page)  # parsing unescapes: the cells read as the names are
    assert table["source"] == ["runs/<i>june</i>&co.parquet"] and table["assets"] == ["B&<b>: 19"]
    plan = mosaic.plan(SEAM12, "EPSG:4326", "2024-06-11", index=odd, resolution=0.002)
    assert cells(plan._repr_html_())["bands"] == ["B&<b>: uint16, nodata 0"]
    assert "<b>" not in plan._repr_html_()


def test_a_crs_without_code_shows_by_its_name(tmp_path):
    index = mosaic.TileIndex.from_files([DEM, L7], progress=False)
    assert any(len(r.crs) > 1000 and "PROJCRS[" in r.crs for r in index.records())  # stored as WKT2
    text = repr(index)
    assert "UTM Zone 25, Southern Hemisphere: 1" in text and "PROJCRS" not in text and len(text) < 300
    plan = mosaic.plan(index.footprints[0].bounds, "EPSG:4326", index=index, resolution=0.0005, groupby=None)
    for shown in (repr(plan), plan._repr_html_(), plan.explain(0, 0)):
        assert "PROJCRS" not in shown and "UTM Zone 25, Southern Hemisphere" in shown
    ax = plan.plot(tmp_path / "dem.png")
    assert "UTM Zone 25, Southern Hemisphere" in [t.get_text() for t in ax.get_legend().get_texts()]


# ----------------------------------------------------------------------------------------- explain


READ_LINE = re.compile(
    r"^    - (?P<scene>\S+) \[B02 b1\] (?P<crs>EPSG:\d+): rows (?P<window>\d+:\d+, cols \d+:\d+) of its "
    r"(?P<grid>.+?) -> chunk rows (?P<target>\d+:\d+, cols \d+:\d+): footprint intersects the chunk$"
)


@pytest.mark.parametrize(
    ("resolution", "grid"),
    [(0.0002, "full-resolution grid"), (0.002, "grid decimated x8 (GDAL picks the overview)")],
)
def test_explain_gives_pixel_windows(demo_index, resolution, grid):
    plan = mosaic.plan(
        SEAM12, "EPSG:4326", "2024-06-11", index=demo_index, resolution=resolution, bands="B02", chunks=512
    )
    busiest = max(plan.tasks, key=lambda task: len(task.reads))
    iy, ix = busiest.iy, busiest.ix
    rows, cols = plan.chunk_slices(iy, ix)
    text = plan.explain(iy, ix)
    lines = text.splitlines()
    window = f"rows {rows.start}:{rows.stop}, cols {cols.start}:{cols.stop}"
    assert lines[0].startswith(f"chunk ({iy}, {ix}): {window} of the output grid, ")
    assert "slice(" not in text and "None" not in text
    reads = [r for t in plan.tasks if (t.iy, t.ix) == (iy, ix) for r in t.reads]
    shown = [READ_LINE.match(line) for line in lines if line.startswith("    - ")]
    assert len(shown) == len(reads) == 2
    for match, read in zip(shown, reads, strict=True):
        assert match, text
        assert (match["scene"], match["crs"], match["grid"]) == (read.scene, read.crs, grid)
        for name, (row, col, h, w) in (("window", read.window), ("target", read.target)):
            assert match[name] == f"{row}:{row + h}, cols {col}:{col + w}"


def test_explain_names_the_overview_of_a_file_that_lists_them(demo_collection):
    files = mosaic.TileIndex.from_files(
        [i.assets["B02"].href for i in demo_collection[1] if i.id.startswith("S33-mid")],
        pattern=r"(?P<id>S33-mid-\d+)/(?P<asset>\w+)\.tif$",
        progress=False,
    )
    plan = mosaic.plan((14.95, 45.65, 15.05, 45.75), "EPSG:32633", index=files, resolution=100, groupby=None)
    read = plan.tasks[0].reads[0]
    assert (read.overview, read.factor) == (1, 4)
    assert "of its x4 overview (level 1) -> chunk rows" in plan.explain(0, 0)


# -------------------------------------------------------------------------------------------- plot


def test_plot_labels_axes_and_counts_the_same_reads_in_title_and_chunks(demo_index, tmp_path):
    plan = mosaic.plan(
        SEAM12, "EPSG:4326", "2024-06", index=demo_index, resolution=0.0002, bands=["B02", "B8A"], chunks=256
    )
    ax = plan.plot(tmp_path / "plan.png")
    assert (tmp_path / "plan.png").read_bytes()[:4] == b"\x89PNG"
    assert ax.get_xlabel() == "x: Geodetic longitude (degree)"
    assert ax.get_ylabel() == "y: Geodetic latitude (degree)"
    reads = plan.summary()["reads"]
    numbers = [int(t.get_text()) for t in ax.texts]
    with_reads = {(t.iy, t.ix) for t in plan.tasks}
    gy, gx = plan.chunk_grid
    title = ax.get_title()
    assert title == (
        f"6 scenes, {reads} reads in {len(with_reads)} of {gy * gx} chunks (256 x 256 px) in EPSG:4326\n"
        "number in a chunk: its reads (all 2 bands x 3 time steps)"
    )
    assert sum(numbers) == reads and len(numbers) == len(with_reads) < gy * gx
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["EPSG:32633", "EPSG:32632", "chunk without reads"]

    utm = mosaic.plan(SEAM12, "utm", "2024-06-11", index=demo_index, resolution=20, bands="B02", chunks=256)
    ax = utm.plot(tmp_path / "utm.png")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x: Easting (metre)", "y: Northing (metre)")
    assert ax.get_title().endswith("in EPSG:32633\nnumber in a chunk: its reads (all 1 band x 1 time step)")


@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:3035", "EPSG:3031", "EPSG:3857"])
def test_axis_labels_whatever_the_axis_order(crs):
    # EPSG:3035 lists northing first; EPSG:3031 gives both of its axes the direction "north"
    assert axis_labels(crs) == ("x: Easting (metre)", "y: Northing (metre)")
