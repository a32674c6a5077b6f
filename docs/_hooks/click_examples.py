r"""An mkdocs hook for the docs build: the commands' "Examples:" paragraphs as text blocks.

mkdocs-click copies each command's help into the CLI page as Markdown. The commands keep their
examples in a click ``\b`` paragraph ("Examples:" and indented command lines), which Markdown would
reflow into one paragraph (and read ``(?P<id>...)`` as HTML). This hook adds a Markdown preprocessor
that runs right after mkdocs-click's and fences the indented lines under an ``Examples:`` line as
``text``, as ``mosaic COMMAND --help`` prints them. Loaded through ``hooks:`` in mkdocs.yml; not part
of the site (``exclude_docs``).
"""

from __future__ import annotations

from typing import Any

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor


class _FenceExamples(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            out.append(line)
            i += 1
            if line.strip() != "Examples:" or i >= len(lines) or not lines[i].startswith("  "):
                continue
            out += ["", "```text"]
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out += ["```", ""]
        return out


class _ClickExamples(Extension):
    def extendMarkdown(self, md: Markdown) -> None:
        md.preprocessors.register(_FenceExamples(md), "mosaic_click_examples", 140)  # after mk_click (141)


def on_config(config: Any) -> Any:
    """Add the preprocessor to the site's Markdown extensions."""
    config.markdown_extensions.append(_ClickExamples())
    return config
