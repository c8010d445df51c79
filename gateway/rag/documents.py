"""What every document loader produces: blocks of plain text with their place in the document,
and the text helpers the loaders share (decoding, whitespace, heading paths, titles)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway.rag.errors import UnreadableDocument

DocumentKind = Literal["markdown", "text", "pdf", "html", "csv"]


@dataclass(frozen=True, slots=True)
class Block:
    """A paragraph-sized piece of text with its place in the document.

    `atomic` blocks (CSV records) become exactly one chunk: a maintenance record cut in two
    would lose the link between its alarm, its action and its parts.
    """

    text: str
    headings: tuple[str, ...] = ()
    page: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    atomic: bool = False


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    path: Path
    kind: DocumentKind
    title: str
    blocks: tuple[Block, ...]
    warnings: tuple[str, ...] = ()


def decode_text(path: Path, data: bytes, warnings: list[str]) -> str:
    """UTF-8 (with or without BOM), else Windows-1252 with a warning; binary data is refused."""
    if b"\x00" in data[:8192]:
        raise UnreadableDocument("looks like a binary file (NUL bytes), not text", path=path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        warnings.append(f"not valid UTF-8 (byte {exc.start}); decoded as Windows-1252")
        text = data.decode("cp1252", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def clean(text: str) -> str:
    """Collapse runs of spaces and tabs (not newlines) and strip the ends."""
    return re.sub(r"[ \t\f\v\u00a0]+", " ", text).strip()


def split_title(
    blocks: list[Block], levels: Mapping[str, int], path: Path
) -> tuple[str, list[Block]]:
    """Use a single top-level heading as the document title and drop it from heading paths.

    Every section of a manual sits under its H1; repeating "Press P2 manual" in every section
    path adds noise to citations, and the title is stored with the document anyway.
    """
    tops = {b.headings[0] for b in blocks if b.headings and levels.get(b.headings[0]) == 1}
    if len(tops) == 1:
        title = next(iter(tops))
        stripped = [
            Block(b.text, b.headings[1:], b.page, b.metadata, b.atomic)
            if b.headings and b.headings[0] == title
            else b
            for b in blocks
        ]
        return title, stripped
    return path.stem, blocks


class HeadingStack:
    """Tracks the current heading path as headings of various levels arrive."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []
        self.levels: dict[str, int] = {}

    def push(self, level: int, title: str) -> None:
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self.levels.setdefault(title, level)

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(title for _, title in self._stack)
