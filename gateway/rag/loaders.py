"""Read plant documents into structured blocks of plain text.

Each loader keeps what retrieval and citation need and nothing else: the heading path a paragraph
sits under, the PDF page it is on, the columns of a CSV record. Layout (fonts, tables as grids,
links) is dropped. A file that cannot be read raises a typed error naming it; anything partially
lost (an empty PDF page, a malformed CSV row) is recorded in `LoadedDocument.warnings` so the
ingest report can show it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

from gateway.rag.errors import UnreadableDocument, UnsupportedDocument

DocumentKind = Literal["markdown", "text", "pdf", "html", "csv"]

EXTENSIONS: Mapping[str, DocumentKind] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".csv": "csv",
}


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


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS


def load_document(path: Path, data: bytes | None = None) -> LoadedDocument:
    """Parse a document; `data` avoids a second read when the caller already hashed the bytes."""
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        supported = ", ".join(sorted(EXTENSIONS))
        raise UnsupportedDocument(
            f"unsupported file type {path.suffix or '(none)'!r}; supported: {supported}", path=path
        )
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UnreadableDocument(f"cannot read: {exc.strerror or exc}", path=path) from exc
    loader = _LOADERS[kind]
    doc = loader(path, data)
    if not any(block.text.strip() for block in doc.blocks):
        raise UnreadableDocument("no text found in the document", path=path)
    return doc


# --- text decoding ------------------------------------------------------------------------------


def _decode(path: Path, data: bytes, warnings: list[str]) -> str:
    """UTF-8 (with or without BOM), else Windows-1252 with a warning; binary data is refused."""
    if b"\x00" in data[:8192]:
        raise UnreadableDocument("looks like a binary file (NUL bytes), not text", path=path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        warnings.append(f"not valid UTF-8 (byte {exc.start}); decoded as Windows-1252")
        text = data.decode("cp1252", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _clean(text: str) -> str:
    """Collapse runs of spaces and tabs (not newlines) and strip the ends."""
    return re.sub(r"[ \t\f\v\u00a0]+", " ", text).strip()


def _split_title(
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


class _HeadingStack:
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


# --- Markdown and plain text ---------------------------------------------------------------------

_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^(```|~~~)")
_SETEXT = re.compile(r"^(=+|-+)[ \t]*$")


def _load_markdown(path: Path, data: bytes) -> LoadedDocument:
    warnings: list[str] = []
    lines = _decode(path, data, warnings).split("\n")
    stack = _HeadingStack()
    blocks: list[Block] = []
    para: list[str] = []
    in_fence = False

    def flush() -> None:
        text = "\n".join(para).strip()
        para.clear()
        if text:
            blocks.append(Block(text, stack.path))

    skip_next = False
    for i, line in enumerate(lines):
        if skip_next:
            skip_next = False
            continue
        if _FENCE.match(line.strip()):
            in_fence = not in_fence
            para.append(line)
            continue
        if in_fence:
            para.append(line)
            continue
        atx = _ATX.match(line)
        if atx:
            flush()
            stack.push(len(atx.group(1)), _clean(atx.group(2)))
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and not para and _SETEXT.match(nxt) and not _is_list_or_table(line):
            # Setext heading: a single line underlined by === (level 1) or --- (level 2).
            stack.push(1 if nxt.lstrip().startswith("=") else 2, _clean(line))
            skip_next = True
            continue
        if not line.strip():
            flush()
            continue
        para.append(line.rstrip())
    flush()
    title, blocks = _split_title(blocks, stack.levels, path)
    return LoadedDocument(path, "markdown", title, tuple(blocks), tuple(warnings))


def _is_list_or_table(line: str) -> bool:
    return bool(re.match(r"^\s*([-*+]|\d+[.)]|\|)\s", line))


_CAPS_HEADING = re.compile(r"^[A-Z0-9][A-Z0-9 &/(),.:'+-]{2,70}$")


def _load_text(path: Path, data: bytes) -> LoadedDocument:
    """Plain text: blank lines separate paragraphs; underlined or ALL-CAPS lines are headings.

    Plant notes are often typed in a text editor with exactly these conventions.
    """
    warnings: list[str] = []
    lines = _decode(path, data, warnings).split("\n")
    stack = _HeadingStack()
    blocks: list[Block] = []
    para: list[str] = []
    skip_next = False

    def flush() -> None:
        text = "\n".join(para).strip()
        para.clear()
        if text:
            blocks.append(Block(text, stack.path))

    for i, line in enumerate(lines):
        if skip_next:
            skip_next = False
            continue
        stripped = line.strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        prev_blank = i == 0 or not lines[i - 1].strip()
        if stripped and not para and _SETEXT.match(nxt) and len(nxt) >= 3:
            flush()
            stack.push(1 if nxt.startswith("=") else 2, _clean(stripped.rstrip(":")))
            skip_next = True
            continue
        is_caps = (
            prev_blank
            and _CAPS_HEADING.match(stripped) is not None
            and any(c.isalpha() for c in stripped)
            and not stripped.endswith(".")
        )
        if is_caps:
            flush()
            stack.push(3, _clean(stripped.rstrip(":")))
            continue
        if not stripped:
            flush()
            continue
        para.append(line.rstrip())
    flush()
    title, blocks = _split_title(blocks, stack.levels, path)
    return LoadedDocument(path, "text", title, tuple(blocks), tuple(warnings))


# --- PDF ----------------------------------------------------------------------------------------


def _load_pdf(path: Path, data: bytes) -> LoadedDocument:
    """One block per paragraph per page, pages numbered from 1 as printed citations expect."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    warnings: list[str] = []
    blocks: list[Block] = []
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableDocument("the PDF is encrypted with a password", path=path)
        title = ""
        meta = reader.metadata
        if meta is not None and meta.title:
            title = _clean(str(meta.title))
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").replace("\r\n", "\n").replace("\r", "\n")
            paragraphs = [_clean(p) for p in re.split(r"\n\s*\n", text)]
            paragraphs = [p for p in paragraphs if p]
            if not paragraphs:
                warnings.append(f"page {number} has no extractable text (scanned image?)")
            blocks.extend(Block(p, (), number) for p in paragraphs)
    except UnreadableDocument:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableDocument(f"cannot parse PDF: {exc}", path=path) from exc
    return LoadedDocument(path, "pdf", title or path.stem, tuple(blocks), tuple(warnings))


# --- HTML ---------------------------------------------------------------------------------------

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
        self.stack = _HeadingStack()
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
            text = _clean(" ".join(self._heading))
            self._heading = None
            if text:
                self.stack.push(self._heading_level, text)
        elif tag in {"ol", "ul"}:
            self._flush()
            if self._lists:
                self._lists.pop()
        elif tag == "tr" and self._cells is not None:
            row = " | ".join(_clean(c) for c in self._cells if _clean(c))
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
            lines = (_clean(line) for line in raw.split("\n"))
            text = "\n".join(line for line in lines if line)
        if text.strip() and not re.fullmatch(r"-|\d+\.", text.strip()):
            self.blocks.append(Block(text, self.stack.path))

    def close(self) -> None:
        super().close()
        self._flush()


def _load_html(path: Path, data: bytes) -> LoadedDocument:
    warnings: list[str] = []
    parser = _HtmlBlocks()
    parser.feed(_decode(path, data, warnings))
    parser.close()
    title, blocks = _split_title(parser.blocks, parser.stack.levels, path)
    if title == path.stem and parser.title.strip():
        title = _clean(parser.title)
    return LoadedDocument(path, "html", title, tuple(blocks), tuple(warnings))


# --- CSV ----------------------------------------------------------------------------------------

_CSV_DELIMITERS = ",;\t|"
_DATE_COLUMNS = ("date", "datetime", "timestamp", "time", "day")
_MACHINE_COLUMNS = ("machine", "asset", "equipment", "line", "device", "station")


def _load_csv(path: Path, data: bytes) -> LoadedDocument:
    """One block per record: `Column: value` lines, the columns kept as metadata.

    The section is a record key (date / machine / row N) so a citation points at one record.
    """
    warnings: list[str] = []
    text = _decode(path, data, warnings)
    sample = text[:8192]
    dialect: type[csv.Dialect] | csv.Dialect
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=_CSV_DELIMITERS)
    except csv.Error:
        # The sniffer gives up on ragged rows; the header line alone is a good enough guess.
        header_line = sample.split("\n", 1)[0]
        delimiter = max(_CSV_DELIMITERS, key=header_line.count)
        warnings.append(f"CSV dialect not detected; using delimiter {delimiter!r} from the header")
        dialect = csv.excel_tab if delimiter == "\t" else _dialect_with(delimiter)
    try:
        rows = list(csv.reader(io.StringIO(text), dialect))
    except csv.Error as exc:
        raise UnreadableDocument(f"cannot parse CSV: {exc}", path=path) from exc
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise UnreadableDocument("CSV needs a header row and at least one record", path=path)
    header = [_clean(h) or f"column {i + 1}" for i, h in enumerate(rows[0])]
    date_col = _find_column(header, _DATE_COLUMNS)
    machine_col = _find_column(header, _MACHINE_COLUMNS)
    blocks: list[Block] = []
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            warnings.append(f"row {number} has {len(row)} fields, header has {len(header)}")
        values = [_clean(v) for v in row]
        meta: dict[str, str] = {}
        for i, value in enumerate(values):
            name = header[i] if i < len(header) else f"extra {i - len(header) + 1}"
            meta[name] = value
        body = "\n".join(f"{k}: {v}" for k, v in meta.items() if v)
        key_parts = [meta.get(header[c], "") for c in (date_col, machine_col) if c is not None]
        key = " / ".join(p for p in key_parts if p)
        section = f"{key} (row {number})" if key else f"row {number}"
        blocks.append(Block(body, (section,), None, meta, atomic=True))
    return LoadedDocument(path, "csv", path.stem, tuple(blocks), tuple(warnings))


def _dialect_with(delimiter: str) -> type[csv.Dialect]:
    class Guessed(csv.excel):
        pass

    Guessed.delimiter = delimiter
    return Guessed


def _find_column(header: list[str], names: tuple[str, ...]) -> int | None:
    lowered = [h.lower() for h in header]
    for name in names:
        for i, h in enumerate(lowered):
            if h == name or h.startswith(name + " ") or h.startswith(name + "_"):
                return i
    return None


_LOADERS: Mapping[DocumentKind, Callable[[Path, bytes], LoadedDocument]] = {
    "markdown": _load_markdown,
    "text": _load_text,
    "pdf": _load_pdf,
    "html": _load_html,
    "csv": _load_csv,
}
