"""HTML documents (exported wiki pages, vendor manuals saved from a browser) into blocks."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from gateway.rag.documents import (
    Block,
    HeadingStack,
    LoadedDocument,
    clean,
    decode_text,
    split_title,
)

_BLOCK_TAGS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "aside", "nav", "ul", "ol",
        "li", "dl", "dt", "dd", "table", "thead", "tbody", "tr", "blockquote", "pre", "figure",
        "figcaption", "form", "fieldset", "address", "hr", "body",
    }
)  # fmt: skip
_DROPPED_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}


class _HtmlBlocks(HTMLParser):
    """Flattens HTML into paragraphs under the h1-h6 structure; scripts and styles are dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack = HeadingStack()
        self.blocks: list[Block] = []
        self.title = ""
        self._text: list[str] = []
        self._heading: list[str] | None = None
        self._heading_level = 0
        self._dropped = 0
        self._in_title = False
        self._pre = 0
        self._cells: list[str] | None = None
        self._lists: list[int | None] = []  # item counter of each open <ol>, None for <ul>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED_TAGS:
            self._dropped += 1
            return
        if tag == "title":
            self._in_title = True
        elif tag in _HEADINGS:
            self._flush()
            self._heading, self._heading_level = [], _HEADINGS[tag]
        elif tag == "br":
            self._emit("\n")
        elif tag == "li":
            self._flush()
            if self._lists and self._lists[-1] is not None:
                self._lists[-1] += 1
                self._emit(f"{self._lists[-1]}. ")
            else:
                self._emit("- ")
        elif tag in {"ol", "ul"}:
            self._flush()
            self._lists.append(0 if tag == "ol" else None)
        elif tag == "tr":
            self._flush()
            self._cells = []
        elif tag in {"td", "th"} and self._cells is not None:
            self._cells.append("")
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag == "pre":
                self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROPPED_TAGS:
            self._dropped = max(0, self._dropped - 1)
            return
        if tag == "title":
            self._in_title = False
        elif tag in _HEADINGS and self._heading is not None:
            text = clean(" ".join(self._heading))
            self._heading = None
            if text:
                self.stack.push(self._heading_level, text)
        elif tag in {"ol", "ul"}:
            self._flush()
            if self._lists:
                self._lists.pop()
        elif tag == "tr" and self._cells is not None:
            row = " | ".join(clean(c) for c in self._cells if clean(c))
            self._cells = None
            if row:
                self._text.append(row)
                self._flush()
        elif tag in _BLOCK_TAGS:
            self._flush()
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._dropped:
            return
        if self._in_title:
            self.title += data
        else:
            self._emit(data)

    def _emit(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)
        elif self._cells is not None and self._cells:
            self._cells[-1] += data
        else:
            self._text.append(data)

    def _flush(self) -> None:
        raw = "".join(self._text)
        self._text.clear()
        if self._pre:
            text = raw.strip("\n")
        else:
            lines = (clean(line) for line in raw.split("\n"))
            text = "\n".join(line for line in lines if line)
        if text.strip() and not re.fullmatch(r"-|\d+\.", text.strip()):
            self.blocks.append(Block(text, self.stack.path))

    def close(self) -> None:
        super().close()
        self._flush()


def load_html(path: Path, data: bytes) -> LoadedDocument:
    warnings: list[str] = []
    parser = _HtmlBlocks()
    parser.feed(decode_text(path, data, warnings))
    parser.close()
    title, blocks = split_title(parser.blocks, parser.stack.levels, path)
    if title == path.stem and parser.title.strip():
        title = clean(parser.title)
    return LoadedDocument(path, "html", title, tuple(blocks), tuple(warnings))
