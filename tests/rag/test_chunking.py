from __future__ import annotations

import itertools
import re

import pytest

from gateway.rag.chunking import Chunk, chunk_blocks, embedding_text, overlap_tail
from gateway.rag.documents import Block

WORDS = ["hydraulic", "pressure", "filter", "element", "valve", "pump", "cylinder", "accumulator"]


def sentence(i: int) -> str:
    return f"Sentence {i} checks the {WORDS[i % len(WORDS)]} and {WORDS[(i * 3) % len(WORDS)]}."


def test_sections_are_never_mixed() -> None:
    blocks = [
        Block("Intro.", ()),
        Block("E101 text.", ("Alarms", "E101 Emergency stop")),
        Block("More E101.", ("Alarms", "E101 Emergency stop")),
        Block("E203 text.", ("Alarms", "E203 Hydraulic pressure low")),
    ]
    chunks = chunk_blocks(blocks, chunk_chars=500, overlap=50)
    assert [(c.section, c.text) for c in chunks] == [
        ("", "Intro."),
        ("Alarms > E101 Emergency stop", "E101 text.\n\nMore E101."),
        ("Alarms > E203 Hydraulic pressure low", "E203 text."),
    ]
    assert [c.ordinal for c in chunks] == [0, 1, 2]


def test_pages_are_never_mixed() -> None:
    blocks = [Block("one", (), 1), Block("two", (), 1), Block("three", (), 2)]
    chunks = chunk_blocks(blocks, chunk_chars=200, overlap=0)
    assert [(c.page, c.text) for c in chunks] == [(1, "one\n\ntwo"), (2, "three")]


def test_long_section_is_split_with_overlap_on_word_boundaries() -> None:
    paragraph = " ".join(sentence(i) for i in range(60))
    chunks = chunk_blocks([Block(paragraph, ("Hydraulics",))], chunk_chars=400, overlap=80)
    assert len(chunks) > 5
    words = set(paragraph.split())
    for chunk in chunks:
        assert len(chunk.text) <= 400
        assert chunk.section == "Hydraulics"
        assert set(chunk.text.split()) <= words, "a word was cut"
    for previous, current in itertools.pairwise(chunks):
        shared = current.text[:40]
        assert shared in previous.text, "consecutive chunks must overlap"
    # Nothing is lost: every sentence is in some chunk.
    joined = " ".join(c.text for c in chunks)
    for i in range(60):
        assert sentence(i) in joined


def test_overlap_tail_prefers_sentence_starts() -> None:
    text = "First sentence is long enough. Second one here."
    assert overlap_tail(text, 25) == "Second one here."
    assert overlap_tail("alpha beta gamma", 8) == "gamma"
    assert overlap_tail("abc", 0) == ""


def test_a_single_overlong_token_is_cut_as_a_last_resort() -> None:
    blob = "x" * 1000
    chunks = chunk_blocks([Block(f"before {blob} after", ())], chunk_chars=300, overlap=0)
    assert all(len(c.text) <= 300 for c in chunks)
    assert "".join(re.sub(r"[^x]", "", c.text) for c in chunks) == blob


def test_atomic_blocks_are_one_chunk_each_with_metadata() -> None:
    long_record = "action: " + "replaced filter " * 200
    blocks = [
        Block(
            "date: 2026-01-07",
            ("2026-01-07 / P2 (row 1)",),
            metadata={"machine": "P2"},
            atomic=True,
        ),
        Block(long_record, ("2026-01-08 / P2 (row 2)",), metadata={"machine": "P2"}, atomic=True),
    ]
    chunks = chunk_blocks(blocks, chunk_chars=300, overlap=50)
    assert len(chunks) == 2
    assert chunks[1].text == long_record.strip()
    assert chunks[0].metadata == {"machine": "P2"}
    assert chunks[1].section == "2026-01-08 / P2 (row 2)"


@pytest.mark.parametrize(("size", "overlap"), [(40, 0), (300, 200), (300, -1)])
def test_bad_parameters_are_refused(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk"):
        chunk_blocks([Block("x", ())], chunk_chars=size, overlap=overlap)


def test_embedding_text_carries_title_and_section_but_stored_text_is_clean() -> None:
    chunk = Chunk(0, "Check the filter.", "Alarms > E203 Hydraulic pressure low")
    assert embedding_text(chunk, "Press P2 manual") == (
        "Press P2 manual > Alarms > E203 Hydraulic pressure low\nCheck the filter."
    )
    assert chunk.text == "Check the filter."
    assert embedding_text(Chunk(0, "plain"), "") == "plain"


def test_section_paths_fit_the_wire_limit() -> None:
    from gateway.rag.chunking import MAX_SECTION_CHARS, section_path

    assert section_path(["A", "B"]) == "A > B"
    deep = [f"Heading number {i} " + "x" * 40 for i in range(10)]
    path = section_path(deep)
    assert len(path) <= MAX_SECTION_CHARS
    assert path.startswith("… > ")
    assert path.endswith(deep[-1])
    assert len(section_path(["y" * 1000])) == MAX_SECTION_CHARS
