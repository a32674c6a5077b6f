"""The documentation: the site builds with ``mkdocs build --strict``, and every code block runs.

Code blocks of ``docs/*.md`` and ``README.md``, one test per page, each in a fresh folder holding the
demo collection (``collection/``, with ``collection/items.json``) and its index (``index.parquet``):

* ``python`` blocks run in order in one namespace per page, in this process;
* ``console`` blocks: ``$ `` lines (with their ``\\`` continuation lines) are commands, other lines
  are output and are not run; ``sh``/``bash``/``shell`` blocks: every line is a command. Each command
  must be a ``mosaic`` command and runs as a real process (the virtualenv's ``mosaic`` script) that
  must exit with 0;
* ``text`` (and other data languages) blocks are output samples or diagrams and are not run;
* a block right after an HTML comment ``<!-- no-run: reason -->`` is not run: each such block is
  reported as a skipped test with its reason, and there may be at most ``MAX_NO_RUN`` of them.

A fence without a language, or with one not listed here, fails the test of its page. A figure a
page draws must spend its colour scale on the data, not on an unmasked nodata value
(``colour_scale_problems`` of ``docs/_figures.py``, the script that makes the site's pictures; its
pictures in ``docs/images/`` are all used and small, and the script itself runs).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from mosaic import TileIndex

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv running the tests: its mkdocs and mosaic scripts
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

PYTHON = {"python", "py"}
SHELL = {"console", "bash", "sh", "shell"}
NOT_RUN = {"text", "json", "yaml", "toml", "ini", "xml", "csv"}
MAX_NO_RUN = 6  # a cluster, GDAL >= 3.9 tools, the README's own commands, three benchmarks (minutes each)
"""At most this many blocks may opt out of running; each is listed as a skipped test."""
COMMAND_TIMEOUT = 300
IMAGES = ROOT / "docs" / "images"
MAX_IMAGE_BYTES = 150_000
"""The site's pictures are committed: each stays well under this size."""

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_NO_RUN = re.compile(r"^\s*<!--\s*no-run:\s*(?P<reason>.+?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    no_run: str | None  # the reason, when the block opts out of running

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced code block of ``page``, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        lang = match["info"].strip().split(" ")[0].lstrip(".").lower() if match["info"].strip() else ""
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = lines[i].strip()
            if close.startswith(fence[0] * len(fence)) and not close.strip(fence[0]):
                break
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1  # past the closing fence
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        opt_out = _NO_RUN.match(before)
        found.append(
            Block(page, start + 1, lang, "\n".join(body) + "\n", opt_out["reason"] if opt_out else None)
        )
    return found


@dataclass(frozen=True)
class Command:
    """One command of a shell block, and the output lines the page shows under it."""

    text: str
    shown: tuple[str, ...] = ()


def shell_commands(block: Block) -> list[Command]:
    """The commands of a shell block, continuation lines joined, each with the output shown under it."""
    prompted = block.lang == "console"
    commands: list[Command] = []
    current: str | None = None
    for raw in block.code.splitlines():
        line = raw.rstrip()
        if current is None:
            if prompted and not line.startswith("$ "):
                if commands and line.strip():  # output of the command above
                    last = commands[-1]
                    commands[-1] = Command(last.text, (*last.shown, line.strip()))
                continue
            if prompted:
                line = line[2:]
            elif not line.strip() or line.lstrip().startswith("#"):
                continue
            current = ""
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        commands.append(Command((current + line.strip()).strip()))
        current = None
    if current is not None:
        commands.append(Command(current.strip()))
    return commands


def shown_in(shown: tuple[str, ...], output: str) -> str | None:
    """The first shown line missing from ``output`` (in order; ``...`` skips lines), or None."""
    actual = [line.strip() for line in output.splitlines()]
    position = 0
    for line in shown:
        if line == "...":
            continue
        try:
            position = actual.index(line, position) + 1
        except ValueError:
            return line
    return None


ALL_BLOCKS = [b for page in PAGES for b in blocks(page)]
NO_RUN_BLOCKS = [b for b in ALL_BLOCKS if b.no_run is not None]


# ------------------------------------------------------------------------------------ the site


def test_site_builds_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict``: no warning (a broken internal link or anchor, a page missing from the
    nav, a docstring mkdocstrings cannot render)."""
    mkdocs = BIN / "mkdocs"
    assert mkdocs.exists(), f"{mkdocs} not found: install the dev extras (pip install -e '.[dev]')"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    output = result.stdout + result.stderr
    warnings = [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert result.returncode == 0 and not warnings, f"mkdocs build --strict failed:\n{output}"
    assert (tmp_path / "site" / "index.html").exists()
    for page in ("concepts", "api", "cli", "limitations", "notebooks"):
        assert (tmp_path / "site" / f"{page}.html").exists(), f"{page}.html missing from the site"
    # the site's own CSS (wide code and tables stay in their box) is built in and linked by every page
    assert (tmp_path / "site" / "stylesheets" / "extra.css").exists()
    assert 'href="stylesheets/extra.css"' in (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert not (tmp_path / "site" / "_figures.py").exists()  # a build script, not part of the site


def local_links(page: Path) -> list[str]:
    """The relative link and image targets of a Markdown page (anchors dropped)."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8"))
    return [t for t in targets if "://" not in t]


@pytest.mark.parametrize("readme", ["README.md", "notebooks/README.md"])
def test_readme_links_exist(readme: str) -> None:
    """The READMEs are not part of the site, so their relative links (and pictures) are checked here."""
    page = ROOT / readme
    local = local_links(page)
    assert local, f"{readme} links no page of the docs"
    missing = [t for t in local if not (page.parent / t).exists()]
    assert not missing, f"{readme} links to missing files: {missing}"


def test_pictures_are_used_and_small() -> None:
    """Every picture in docs/images is shown by a page (the strict build checks the other way round:
    every picture a page shows exists), and each is small enough to commit."""
    pictures = sorted(IMAGES.glob("*.png"))
    assert pictures, "docs/images holds no picture"
    used = {
        (page.parent / target).resolve()
        for page in [*PAGES, ROOT / "notebooks" / "README.md"]
        for target in local_links(page)
    }
    unused = [p.name for p in pictures if p.resolve() not in used]
    assert not unused, f"pictures no page shows (remove them, or show them): {unused}"
    large = {p.name: p.stat().st_size for p in pictures if p.stat().st_size > MAX_IMAGE_BYTES}
    assert not large, f"pictures over {MAX_IMAGE_BYTES} bytes (lower their dpi in docs/_figures.py): {large}"


@functools.cache
def figures_script() -> ModuleType:
    """``docs/_figures.py``, imported from its path (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("docs_figures", ROOT / "docs" / "_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------- the code blocks


@pytest.fixture(scope="session")
def docs_data(demo_collection, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo collection and its index, prepared once: ``collection/`` and ``index.parquet``."""
    root, items = demo_collection
    data = tmp_path_factory.mktemp("docs-data")
    (data / "collection").symlink_to(root, target_is_directory=True)
    TileIndex.from_stac(items).write(data / "index.parquet")
    return data


@pytest.fixture
def workdir(docs_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder per page with the demo data; the working directory while the page runs."""
    (tmp_path / "collection").symlink_to(docs_data / "collection", target_is_directory=True)
    shutil.copy(docs_data / "index.parquet", tmp_path / "index.parquet")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("MOSAIC_INDEX", raising=False)
    return tmp_path


def _run_python(block: Block, namespace: dict[str, object]) -> None:
    # blank lines in front, so that tracebacks name the page and its own line numbers
    source = "\n" * block.line + block.code
    try:
        exec(compile(source, str(block.page), "exec"), namespace)
    except Exception as exc:
        # the traceback from the page's own frame on (the doc's lines, then the library's)
        failure = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next))
    else:
        return
    pytest.fail(f"{block.where}: python block failed:\n{failure}", pytrace=False)


def _run_shell(block: Block, cwd: Path) -> None:
    commands = shell_commands(block)
    assert commands, f"{block.where}: a {block.lang} block without commands; fence output as text"
    for command in commands:
        args = shlex.split(command.text, comments=True)
        if not args or args[0] != "mosaic":
            pytest.fail(
                f"{block.where}: {command.text!r} is not a mosaic command; only mosaic commands are run. "
                "Fence output as text, or mark the block <!-- no-run: reason --> if it cannot run here",
                pytrace=False,
            )
        result = subprocess.run(
            [str(BIN / "mosaic"), *args[1:]],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        output = f"{result.stdout}\n{result.stderr}"
        if result.returncode != 0:
            pytest.fail(
                f"{block.where}: {command.text!r} exited with {result.returncode}:\n{output}", pytrace=False
            )
        missing = shown_in(command.shown, output)
        if missing is not None:
            pytest.fail(
                f"{block.where}: the page shows {missing!r} under {command.text!r}, but the command "
                f"printed:\n{output}",
                pytrace=False,
            )


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_code_blocks_run(page: Path, workdir: Path) -> None:
    """Every block of the page runs (python in one namespace, in order; mosaic commands as processes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    namespace: dict[str, object] = {"__name__": f"docs:{page.stem}"}
    colour_scale_problems = figures_script().colour_scale_problems
    try:
        for block in blocks(page):
            if block.no_run is not None:
                continue
            if block.lang in PYTHON:
                _run_python(block, namespace)
            elif block.lang in SHELL:
                _run_shell(block, workdir)
            elif block.lang not in NOT_RUN:
                pytest.fail(
                    f"{block.where}: a fence with language {block.lang or '(none)'!r}: use python or "
                    f"console/sh (run), or text (not run; output and diagrams)",
                    pytrace=False,
                )
        problems = [p for n in plt.get_fignums() for p in colour_scale_problems(plt.figure(n))]
        assert not problems, f"{page.name} draws images whose colour scale is not the data's: {problems}"
    finally:
        plt.close("all")


@pytest.mark.parametrize("block", NO_RUN_BLOCKS, ids=[b.where for b in NO_RUN_BLOCKS])
def test_no_run_block(block: Block) -> None:
    """Blocks marked ``<!-- no-run: reason -->`` are listed here, as skipped tests with their reason."""
    pytest.skip(f"{block.where}: no-run: {block.no_run}")


def test_few_blocks_opt_out() -> None:
    listing = "\n".join(f"  {b.where}: {b.no_run}" for b in NO_RUN_BLOCKS)
    assert len(NO_RUN_BLOCKS) <= MAX_NO_RUN, f"too many blocks opt out of running:\n{listing}"


def test_block_parser() -> None:
    """The fence and command parsing the tests above rely on."""
    page = ROOT / "docs" / "index.md"
    console = Block(
        page,
        1,
        "console",
        "$ mosaic plan --index index.parquet \\\n    --bbox 1,2,3,4   # comment\nscenes: 2\n...\n"
        "$ mosaic --version\n",
        None,
    )
    assert shell_commands(console) == [
        Command("mosaic plan --index index.parquet --bbox 1,2,3,4   # comment", ("scenes: 2", "...")),
        Command("mosaic --version"),
    ]
    script = Block(page, 1, "sh", "# a comment\nmosaic index info index.parquet\n\nmosaic --version\n", None)
    assert [c.text for c in shell_commands(script)] == ["mosaic index info index.parquet", "mosaic --version"]
    assert shown_in(("a", "...", "c"), "a\n  b\nc  \n") is None
    assert shown_in(("c", "a"), "a\nb\nc\n") == "a"  # in order
    assert all(b.lang for b in ALL_BLOCKS), [b.where for b in ALL_BLOCKS if not b.lang]


# ------------------------------------------------------------------------------------ the pictures


def test_colour_scale_check_finds_unmasked_nodata(docs_data: Path) -> None:
    """The check the pages and notebooks pass: B02 of the demo drawn with its nodata (0) as data is
    one flat colour beside holes, and is caught; masked, its colours show the field, and it passes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import mosaic

    colour_scale_problems = figures_script().colour_scale_problems
    bbox = (11.88, 45.40, 12.12, 45.58)
    index = str(docs_data / "index.parquet")
    b02 = mosaic.load(bbox, "EPSG:4326", "2024-06-01", index=index, resolution=0.001, bands=["B02"]).B02
    b02 = b02.isel(time=0).compute()
    assert (b02 == b02.attrs["nodata"]).mean() > 0.1  # the scenes' nodata collars are in the picture
    try:
        unmasked = plt.figure()
        b02.plot(ax=unmasked.add_subplot())
        masked = plt.figure()
        b02.where(b02 != b02.attrs["nodata"]).plot(ax=masked.add_subplot(), robust=True)
        problems = colour_scale_problems(unmasked)
        assert len(problems) == 1 and "nodata drawn as data" in problems[0], problems
        assert colour_scale_problems(masked) == []
    finally:
        plt.close("all")


def test_figures_script_runs(docs_data: Path, tmp_path: Path) -> None:
    """``docs/_figures.py`` on one notebook picture (the others take ~40 s; ``make docs-figures``):
    it runs the notebook, finds the figure by its title, and writes a small PNG."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "docs" / "_figures.py"),
            "--only",
            "quickstart_seam",
            "--index",
            str(docs_data / "index.parquet"),
            "--out",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env={**os.environ, "MPLBACKEND": "Agg"},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["quickstart_seam.png"]
    picture = tmp_path / "quickstart_seam.png"
    assert picture.read_bytes().startswith(b"\x89PNG") and 10_000 < picture.stat().st_size < MAX_IMAGE_BYTES
    assert (IMAGES / "quickstart_seam.png").exists()  # the picture the site shows
