"""Split loaded documents into retrieval chunks that follow the document's own structure.

Rules, in order of importance:
- a chunk never spans two sections (heading paths) or two PDF pages, so its citation is exact;
- CSV records (atomic blocks) are one chunk each, whatever their length;
- paragraphs are packed up to `chunk_chars`; a longer paragraph is cut at sentence ends, then at
  spaces; only a single "word" longer than the budget is cut mid-word;
- consecutive chunks of one section share `overlap` characters (whole words), so a sentence cut
  at a boundary is still whole in one of them.

Stored text versus embedded text: the stored `Chunk.text` is the clean document text (it goes into
the prompt and the FTS index, where the section is a separate column), while `embedding_text()`
prefixes the document title and section path. A paragraph such as "Check the suction filter" says
nothing about which machine or alarm it belongs to; the prefix puts that in the vector, which
measurably helps questions like "what does E203 on P2 mean?".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from gateway.rag.documents import Block, LoadedDocument

SECTION_SEPARATOR = " > "
MAX_SECTION_CHARS = 256  # models.answer.Source.section is a ShortText (<= 256 characters)

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=\S)")
_WHITESPACE = re.compile(r"\s+")
_TAIL_START = re.compile(r"\n+|(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class Chunk:
    ordinal: int
    text: str
    section: str = ""
    page: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


def section_path(headings: Sequence[str]) -> str:
    """Heading path joined with " > ", at most MAX_SECTION_CHARS (answers cite it verbatim).

    When too long, the outer headings are dropped first: the innermost is the most specific.
    """
    path = SECTION_SEPARATOR.join(headings)
    if len(path) <= MAX_SECTION_CHARS:
        return path
    parts = list(headings)
    while len(parts) > 1 and len(SECTION_SEPARATOR.join(["…", *parts])) > MAX_SECTION_CHARS:
        parts.pop(0)
    path = SECTION_SEPARATOR.join(["…", *parts]) if len(parts) < len(headings) else path
    return path if len(path) <= MAX_SECTION_CHARS else path[: MAX_SECTION_CHARS - 1] + "…"


def context_text(chunk: Chunk, title: str) -> str:
    """The chunk's place: "Document title > Section > Subsection"."""
    return SECTION_SEPARATOR.join(p for p in (title, chunk.section) if p)


def embedding_text(chunk: Chunk, title: str) -> str:
    """What is embedded for a chunk: title and section, then the text (see the module doc)."""
    context = context_text(chunk, title)
    return f"{context}\n{chunk.text}" if context else chunk.text


def chunk_document(doc: LoadedDocument, *, chunk_chars: int, overlap: int) -> list[Chunk]:
    return chunk_blocks(doc.blocks, chunk_chars=chunk_chars, overlap=overlap)


def chunk_blocks(blocks: Sequence[Block], *, chunk_chars: int, overlap: int) -> list[Chunk]:
    """Chunks in document order, with ordinals 0..n-1."""
    if chunk_chars < 50:
        raise ValueError(f"chunk_chars must be at least 50, got {chunk_chars}")
    if not 0 <= overlap <= chunk_chars // 2:
        raise ValueError(
            f"chunk overlap must be between 0 and half of chunk_chars ({chunk_chars // 2}), "
            f"got {overlap}"
        )
    chunks: list[Chunk] = []
    for (headings, page, atomic), group in groupby(
        blocks, key=lambda b: (b.headings, b.page, b.atomic)
    ):
        section = section_path(headings)
        members = list(group)
        if atomic:
            for block in members:
                if block.text.strip():
                    chunks.append(
                        Chunk(len(chunks), block.text.strip(), section, page, block.metadata)
                    )
            continue
        paragraphs = [b.text.strip() for b in members if b.text.strip()]
        for text in pack_paragraphs(paragraphs, chunk_chars=chunk_chars, overlap=overlap):
            chunks.append(Chunk(len(chunks), text, section, page))
    return chunks


def pack_paragraphs(paragraphs: Sequence[str], *, chunk_chars: int, overlap: int) -> list[str]:
    """Greedy packing of paragraphs (split further when too long) into overlapping pieces."""
    units = list(_units(paragraphs, chunk_chars - overlap - 2))
    pieces: list[str] = []
    current = ""
    fresh = False  # does `current` hold anything beyond the carried-over overlap?
    for joiner, unit in units:
        candidate = f"{current}{joiner}{unit}" if current else unit
        if fresh and len(candidate) > chunk_chars:
            pieces.append(current)
            tail = overlap_tail(current, overlap)
            current = f"{tail}{joiner}{unit}" if tail else unit
        else:
            current = candidate
        fresh = True
    if fresh and current:
        pieces.append(current)
    return pieces


def overlap_tail(text: str, overlap: int) -> str:
    """The last whole words of `text` that fit in `overlap` characters."""
    if overlap <= 0 or not text:
        return ""
    if len(text) <= overlap:
        return text
    tail = text[-overlap:]
    # Prefer starting at a line or sentence start inside the window, else at a word start.
    boundary = _TAIL_START.search(tail)
    if boundary is not None and boundary.end() < len(tail):
        return tail[boundary.end() :].strip()
    if not text[-overlap - 1].isspace():
        space = _WHITESPACE.search(tail)
        if space is None:
            return ""
        tail = tail[space.end() :]
    return tail.strip()


def _units(paragraphs: Iterable[str], limit: int) -> Iterable[tuple[str, str]]:
    """(joiner, text) units no longer than `limit`; the joiner says how a unit attaches."""
    for paragraph in paragraphs:
        joiner = "\n\n"
        if len(paragraph) <= limit:
            yield joiner, paragraph
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            for piece in _split_words(sentence, limit):
                yield joiner, piece
                joiner = " "


def _split_words(text: str, limit: int) -> Iterable[str]:
    if len(text) <= limit:
        yield text
        return
    current = ""
    for token in text.split():
        word = token
        while len(word) > limit:  # a single overlong token (hash, URL): cutting it is unavoidable
            if current:
                yield current
                current = ""
            yield word[:limit]
            word = word[limit:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) > limit:
            yield current
            current = word
        else:
            current = candidate
    if current:
        yield current
