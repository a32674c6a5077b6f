"""The pictures of the documentation site, made again from the code they show: ``make docs-figures``.

Usage (from the project root; ``--only`` takes picture names without ``.png``)::

    .venv/bin/python docs/_figures.py [--out docs/images] [--only NAME,...] [--index PATH]

Each picture is made by the code it illustrates, on the offline demo collection:

* ``demo_quicklook``: the quick-look ``mosaic demo`` writes (``mosaic.demo.run_demo``), and
  ``demo_plan``: the demo's plan drawn by ``Plan.plot``, as the demo's ``plan.png``, with named axes;
* ``quickstart_month``: the quickstart block of ``docs/index.md``, executed as it stands;
* the notebook pictures: each ``notebooks/NAME.py`` run as a script with matplotlib's Agg backend,
  its Nth figure saved when the notebook shows it (the figure's titles are checked, so a notebook
  whose figures moved fails here instead of putting the wrong picture on the site).

The PNGs are drawn at a modest resolution and reduced to a palette of 256 colours, to stay well
under 150 KB each, and no figure whose colour scale is not spent on its data (an unmasked nodata) is
written. The pixels vary from run to run (noise, fonts), so they are committed and not compared: the
strict build checks that every picture a page shows exists, ``tests/test_docs.py`` that each one is
shown and small, and it runs this script on one notebook. Not a page of the site (``exclude_docs``
in mkdocs.yml).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import runpy
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
DPI = 72
"""Pixels per inch of the pictures: the notebooks' figures are 8 to 17 inches wide."""
MAX_BYTES = 150_000
"""The largest picture this script writes (it fails beyond)."""


@dataclass(frozen=True)
class NotebookFigure:
    """The ``number``-th figure a notebook shows, saved as ``name``.png."""

    name: str
    notebook: str  # notebooks/<notebook>.py
    number: int  # 1-based, in the order the notebook shows its figures
    title: str  # text one of the figure's titles holds
    dpi: int = DPI  # lower for figures of noisy pixels, which compress badly


NOTEBOOK_FIGURES = (
    NotebookFigure("quickstart_seam", "quickstart", 1, "B02 in EPSG:4326"),
    NotebookFigure("quickstart_methods", "quickstart", 4, "method='highest:quality'", dpi=60),
    NotebookFigure("many_crs_seam", "many_crs", 2, "B02 in EPSG:32632", dpi=64),
    NotebookFigure("many_crs_pole", "many_crs", 3, "the pole scene in EPSG:3413"),
    NotebookFigure("gdal_gti_compare", "gdal_gti", 2, "GDAL - mosaic.load"),
    NotebookFigure("batch_regridding_series", "batch_regridding", 1, "the time series of the pixel"),
)
DEMO_FIGURES = ("demo_quicklook", "demo_plan")
PAGE_FIGURES = ("quickstart_month",)
ALL = (*DEMO_FIGURES, *PAGE_FIGURES, *(f.name for f in NOTEBOOK_FIGURES))


def colour_scale_problems(fig: Figure) -> list[str]:
    """The images of ``fig`` whose colour scale is not spent on their data, each as a sentence.

    A raster whose nodata value (0 for the demo's integer bands) is drawn as data stretches the colour
    scale from the nodata to the data, and the data, squeezed into one end of it, show as one flat
    colour beside holes of the other end's colour. So at least a fifth of the values each image
    draws (NaN and masked values are not drawn) must lie in the middle 80% of its colour scale. Mask
    nodata before plotting: ``da.where(da != da.attrs["nodata"])``.
    """
    from matplotlib.cm import ScalarMappable

    problems = []
    for ax in fig.axes:
        for artist in (*ax.images, *ax.collections):
            if not isinstance(artist, ScalarMappable) or artist.get_array() is None:
                continue
            values = np.ma.masked_invalid(np.ma.asarray(artist.get_array(), dtype="float64")).compressed()
            low, high = artist.get_clim()
            if values.size < 100 or low is None or high is None or not high > low:
                continue
            margin = 0.1 * (high - low)
            inside = ((values > low + margin) & (values < high - margin)).mean()
            if inside < 0.2:
                problems.append(
                    f"{ax.get_title() or 'an image'!r}: only {inside:.0%} of its values lie in the middle of "
                    f"its colour scale {low:g}..{high:g}: is its nodata drawn as data?"
                )
    return problems


def save(fig: Figure, path: Path, *, dpi: int = DPI) -> Path:
    """Write ``fig`` as a 256-colour PNG at ``dpi``; fail if it is larger than ``MAX_BYTES``.

    Fails as well when an image of ``fig`` spends its colour scale on nodata (`colour_scale_problems`).
    """
    problems = colour_scale_problems(fig)
    if problems:
        raise RuntimeError(f"{path.name}: " + "; ".join(problems))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return _palette_png(Image.open(buffer), path)


def _palette_png(image: Image.Image, path: Path) -> Path:
    small = image.convert("RGB").quantize(
        colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    small.save(path, optimize=True)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise RuntimeError(f"{path.name}: {size / 1000:.0f} KB, more than {MAX_BYTES / 1000:.0f} KB")
    print(f"{path.name}: {image.width} x {image.height} px, {size / 1000:.0f} KB", file=sys.stderr)
    return path


def titles(fig: Figure) -> str:
    """Every title of ``fig`` (axes titles and the suptitle), one per line."""
    found = [ax.get_title(loc) for ax in fig.axes for loc in ("left", "center", "right")]
    if fig.get_suptitle():
        found.append(fig.get_suptitle())
    return "\n".join(t for t in found if t)


# --------------------------------------------------------------------------------------- the demo


def demo_figures(work: Path, out: Path, wanted: set[str]) -> None:
    """``mosaic demo`` into ``work``: its quick-look, and its plan drawn with labelled axes."""
    import mosaic
    from mosaic.demo import DEMO_BANDS, DEMO_BBOX, DEMO_CHUNKS, DEMO_CRS, DEMO_RESOLUTION, DEMO_TIME, run_demo

    report = run_demo(work, quiet=True)
    if "demo_quicklook" in wanted:
        with Image.open(report.quicklook_path) as image:
            _palette_png(image, out / "demo_quicklook.png")
    if "demo_plan" in wanted:
        # the request of run_demo, whose plan.png this is; drawn here into a figure of our own to
        # name the axes (plan.plot leaves them unnamed)
        plan = mosaic.plan(
            DEMO_BBOX,
            DEMO_CRS,
            DEMO_TIME,
            index=report.index_path,
            resolution=DEMO_RESOLUTION,
            bands=list(DEMO_BANDS),
            chunks=DEMO_CHUNKS,
        )
        fig, ax = plt.subplots(figsize=(7, 6.5))
        plan.plot(ax=ax)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_title(
            f"the plan of mosaic demo: footprints by CRS, reads per chunk\n{ax.get_title()}", fontsize=10
        )
        save(fig, out / "demo_plan.png", dpi=90)
        plt.close(fig)


# ------------------------------------------------------------------------- the quickstart of index.md


def page_block(page: Path, heading: str, marker: str) -> str:
    """The first ``python`` block after ``heading`` on ``page`` that contains ``marker``."""
    text = page.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    for block in re.findall(r"^```python\n(.*?)^```", section, flags=re.S | re.M):
        if marker in block:
            return str(block)
    raise LookupError(f"{page.name}: no python block with {marker!r} after {heading!r}")


def quickstart_month(work: Path, out: Path) -> None:
    """Run the quickstart block of docs/index.md in ``work`` and save the figure it draws."""
    code = page_block(ROOT / "docs" / "index.md", "## Quickstart", ".plot(")
    work.mkdir(parents=True, exist_ok=True)
    with working_directory(work):
        exec(compile(code, "docs/index.md", "exec"), {"__name__": "docs:index"})
    fig = plt.gcf()
    fig.suptitle(
        "the quickstart's ds.B02, nodata masked: three passes of June 2024 across the UTM 32N/33N seam",
        y=1.04,
    )
    save(fig, out / "quickstart_month.png", dpi=80)
    plt.close("all")


# -------------------------------------------------------------------------------------- notebooks


class _Enough(Exception):
    """Raised by the patched ``plt.show`` once a notebook has shown every figure wanted of it."""


def notebook_figures(
    notebook: str, figures: list[NotebookFigure], work: Path, index: Path, out: Path
) -> None:
    """Run ``notebooks/<notebook>.py`` as a script and save the figures wanted of it as it shows them."""
    wanted = {f.number: f for f in figures}
    shown = 0

    def show(*args: Any, **kwargs: Any) -> None:
        nonlocal shown
        for number in plt.get_fignums():
            shown += 1
            figure = wanted.pop(shown, None)
            if figure is None:
                continue
            fig = plt.figure(number)
            if figure.title not in titles(fig):
                raise LookupError(
                    f"notebooks/{notebook}.py: figure {shown} has no title with {figure.title!r}; "
                    f"its titles:\n{titles(fig)}"
                )
            save(fig, out / f"{figure.name}.png", dpi=figure.dpi)
        if not wanted:
            raise _Enough

    folder = work / notebook
    folder.mkdir(parents=True, exist_ok=True)
    environ = {"MOSAIC_INDEX": str(index), "MOSAIC_NOTEBOOK_DIR": str(folder)}
    printed = io.StringIO()  # the notebook's own output; its errors still reach stderr
    with (
        patched(plt, "show", show),
        patched_environ(environ),
        working_directory(folder),
        contextlib.redirect_stdout(printed),
    ):
        try:
            runpy.run_path(str(ROOT / "notebooks" / f"{notebook}.py"), run_name="__main__")
        except _Enough:
            pass
        finally:
            plt.close("all")
    if wanted:
        missing = ", ".join(f"{f.name} (figure {f.number})" for f in wanted.values())
        raise LookupError(f"notebooks/{notebook}.py showed only {shown} figures: {missing} not made")


# ---------------------------------------------------------------------------------------- helpers


@contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """Run the body in ``path``."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextmanager
def patched(owner: Any, name: str, value: Callable[..., Any]) -> Iterator[None]:
    """``owner.name`` replaced by ``value`` in the body."""
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


@contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """Environment variables set in the body, restored after."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(argv: list[str] | None = None) -> int:
    """Make the pictures named by ``--only`` (default: all) into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the PNGs (default {OUT})")
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated names among {', '.join(ALL)}")
    parser.add_argument(
        "--index", type=Path, help="a saved demo index for the notebooks (default: made here)"
    )
    args = parser.parse_args(argv)
    wanted = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = wanted - set(ALL)
    if unknown:
        parser.error(f"unknown picture(s) {sorted(unknown)}; known: {', '.join(ALL)}")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mosaic-docs-figures-") as tmp:
        work = Path(tmp)
        data = work / "demo"  # the demo collection and its index, made once and shared by every step
        if wanted & set(DEMO_FIGURES):
            demo_figures(data, args.out, wanted)
        if "quickstart_month" in wanted:
            quickstart_month(data, args.out)
        by_notebook: dict[str, list[NotebookFigure]] = {}
        for figure in NOTEBOOK_FIGURES:
            if figure.name in wanted:
                by_notebook.setdefault(figure.notebook, []).append(figure)
        if by_notebook:
            from mosaic.demo import demo_index

            index = args.index or demo_index(data)
            for notebook, figures in by_notebook.items():
                notebook_figures(notebook, figures, work / "notebooks", index, args.out)
    print(f"{len(wanted)} pictures in {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
