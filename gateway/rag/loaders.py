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
from pathlib import Path

from gateway.rag.documents import (
    Block,
    DocumentKind,
    HeadingStack,
    LoadedDocument,
    clean,
    decode_text,
    split_title,
)
from gateway.rag.errors import UnreadableDocument, UnsupportedDocument
from gateway.rag.html_loader import load_html

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


# --- Markdown and plain text ---------------------------------------------------------------------

_ATX = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^(```|~~~)")
_SETEXT = re.compile(r"^(=+|-+)[ \t]*$")


def _load_markdown(path: Path, data: bytes) -> LoadedDocument:
    warnings: list[str] = []
    lines = decode_text(path, data, warnings).split("\n")
    stack = HeadingStack()
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
            stack.push(len(atx.group(1)), clean(atx.group(2)))
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and not para and _SETEXT.match(nxt) and not _is_list_or_table(line):
            # Setext heading: a single line underlined by === (level 1) or --- (level 2).
            stack.push(1 if nxt.lstrip().startswith("=") else 2, clean(line))
            skip_next = True
            continue
        if not line.strip():
            flush()
            continue
        para.append(line.rstrip())
    flush()
    title, blocks = split_title(blocks, stack.levels, path)
    return LoadedDocument(path, "markdown", title, tuple(blocks), tuple(warnings))


def _is_list_or_table(line: str) -> bool:
    return bool(re.match(r"^\s*([-*+]|\d+[.)]|\|)\s", line))


_CAPS_HEADING = re.compile(r"^[A-Z0-9][A-Z0-9 &/(),.:'+-]{2,70}$")


def _load_text(path: Path, data: bytes) -> LoadedDocument:
    """Plain text: blank lines separate paragraphs; underlined or ALL-CAPS lines are headings.

    Plant notes are often typed in a text editor with exactly these conventions.
    """
    warnings: list[str] = []
    lines = decode_text(path, data, warnings).split("\n")
    stack = HeadingStack()
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
            stack.push(1 if nxt.startswith("=") else 2, clean(stripped.rstrip(":")))
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
            stack.push(3, clean(stripped.rstrip(":")))
            continue
        if not stripped:
            flush()
            continue
        para.append(line.rstrip())
    flush()
    title, blocks = split_title(blocks, stack.levels, path)
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
            title = clean(str(meta.title))
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").replace("\r\n", "\n").replace("\r", "\n")
            paragraphs = [clean(p) for p in re.split(r"\n\s*\n", text)]
            paragraphs = [p for p in paragraphs if p]
            if not paragraphs:
                warnings.append(f"page {number} has no extractable text (scanned image?)")
            blocks.extend(Block(p, (), number) for p in paragraphs)
    except UnreadableDocument:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnreadableDocument(f"cannot parse PDF: {exc}", path=path) from exc
    return LoadedDocument(path, "pdf", title or path.stem, tuple(blocks), tuple(warnings))


# --- CSV ----------------------------------------------------------------------------------------

_CSV_DELIMITERS = ",;\t|"
_DATE_COLUMNS = ("date", "datetime", "timestamp", "time", "day")
_MACHINE_COLUMNS = ("machine", "asset", "equipment", "line", "device", "station")


def _load_csv(path: Path, data: bytes) -> LoadedDocument:
    """One block per record: `Column: value` lines, the columns kept as metadata.

    The section is a record key (date / machine / row N) so a citation points at one record.
    """
    warnings: list[str] = []
    text = decode_text(path, data, warnings)
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
    header = [clean(h) or f"column {i + 1}" for i, h in enumerate(rows[0])]
    date_col = _find_column(header, _DATE_COLUMNS)
    machine_col = _find_column(header, _MACHINE_COLUMNS)
    blocks: list[Block] = []
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            warnings.append(f"row {number} has {len(row)} fields, header has {len(header)}")
        values = [clean(v) for v in row]
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
    "html": load_html,
    "csv": _load_csv,
}
