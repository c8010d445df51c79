"""The knowledge-base store with real SQLite, sqlite-vec and FTS5 (synthetic vectors, no model)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import apsw
import numpy as np
import pytest
import sqlite_vec

from gateway.errors import KnowledgeBaseError
from gateway.rag import keywords, vector_index
from gateway.rag.chunking import Chunk
from gateway.rag.keywords import fts_query
from gateway.rag.store import DocumentRecord, KnowledgeBase

DIM = 16
IDENTITY = "test/model/d16"


def unit(seed: int) -> list[float]:
    vector = np.random.default_rng(seed).normal(size=DIM)
    return (vector / np.linalg.norm(vector)).tolist()


def doc(path: str = "/kb/manual.md", content_hash: str = "h1") -> DocumentRecord:
    return DocumentRecord(path, "Press P2 manual", "markdown", content_hash)


def chunks_of(*texts: str, section: str = "Alarms") -> list[Chunk]:
    return [Chunk(i, text, section) for i, text in enumerate(texts)]


@pytest.fixture
def kb(tmp_path: Path) -> Iterator[KnowledgeBase]:
    with KnowledgeBase.open(
        tmp_path / "kb.sqlite3", dim=DIM, embedding_identity=IDENTITY
    ) as opened:
        yield opened


def raw_counts(path: Path) -> tuple[int, int, int]:
    """(chunks, vectors, FTS rows) read through a separate connection."""
    conn = apsw.Connection(str(path))
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    try:
        counts = tuple(
            int(conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
            for table in ("chunks", "chunk_vectors", "chunk_fts")
        )
    finally:
        conn.close()
    return counts[0], counts[1], counts[2]


def keyword_ids(kb: KnowledgeBase, text: str) -> list[int]:
    hits = kb.search(text, unit(999), top_k=10)
    return [h.chunk_id for h in hits if h.keyword_rank is not None]


def test_create_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite3"
    with KnowledgeBase.open(path, dim=DIM, embedding_identity=IDENTITY) as kb:
        kb.upsert_document(doc(), chunks_of("E203 text"), [unit(1)])
        version = kb.version
    with KnowledgeBase.open(path, dim=DIM, embedding_identity=IDENTITY) as kb:
        assert kb.version == version == 1
        assert kb.chunk_count() == 1
        stats = kb.stats()
        assert (stats.documents, stats.chunks, stats.dim) == (1, 1, DIM)
        assert stats.embedding_identity == IDENTITY
        assert stats.db_bytes > 0


@pytest.mark.parametrize(("dim", "identity"), [(DIM, "other/model"), (DIM * 2, IDENTITY)])
def test_other_embedding_model_is_refused(tmp_path: Path, dim: int, identity: str) -> None:
    path = tmp_path / "kb.sqlite3"
    KnowledgeBase.open(path, dim=DIM, embedding_identity=IDENTITY).close()
    with pytest.raises(KnowledgeBaseError, match="cannot be mixed") as info:
        KnowledgeBase.open(path, dim=dim, embedding_identity=identity)
    assert IDENTITY in str(info.value)


def test_not_a_database_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite3"
    path.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(KnowledgeBaseError):
        KnowledgeBase.open(path, dim=DIM, embedding_identity=IDENTITY)


def test_upsert_added_unchanged_replaced_removed(kb: KnowledgeBase) -> None:
    assert kb.upsert_document(doc(), chunks_of("alpha E203", "beta"), [unit(1), unit(2)]) == "added"
    assert raw_counts(kb.path) == (2, 2, 2)
    assert kb.document_state("/kb/manual.md") == "h1"
    v1 = kb.version

    assert kb.upsert_document(doc(), chunks_of("ignored"), [unit(3)]) == "unchanged"
    assert kb.version == v1
    assert raw_counts(kb.path) == (2, 2, 2)

    replaced = kb.upsert_document(doc(content_hash="h2"), chunks_of("gamma W020"), [unit(4)])
    assert replaced == "replaced"
    assert kb.version == v1 + 1
    assert raw_counts(kb.path) == (1, 1, 1)
    assert keyword_ids(kb, "E203") == []
    assert len(keyword_ids(kb, "W020")) == 1
    [info] = kb.list_documents()
    assert (info.content_hash, info.chunk_count) == ("h2", 1)

    assert kb.remove_document("/kb/manual.md") is True
    assert kb.remove_document("/kb/manual.md") is False
    assert kb.version == v1 + 2
    assert raw_counts(kb.path) == (0, 0, 0)
    assert kb.list_documents() == []
    assert kb.search("W020", unit(4), top_k=3) == []


def test_chunk_ids_are_never_reused(kb: KnowledgeBase) -> None:
    kb.upsert_document(doc(), chunks_of("one"), [unit(1)])
    [first] = kb.search("one", unit(1), top_k=1)
    kb.upsert_document(doc(content_hash="h2"), chunks_of("one again"), [unit(1)])
    [second] = kb.search("one", unit(1), top_k=1)
    assert second.chunk_id > first.chunk_id


def test_bad_vectors_are_refused(kb: KnowledgeBase) -> None:
    with pytest.raises(KnowledgeBaseError, match="dimensions"):
        kb.upsert_document(doc(), chunks_of("x"), [[0.1] * (DIM + 1)])
    with pytest.raises(KnowledgeBaseError, match="NaN"):
        kb.upsert_document(doc(), chunks_of("x"), [[float("nan")] * DIM])
    with pytest.raises(KnowledgeBaseError, match="2 chunks but 1 vectors"):
        kb.upsert_document(doc(), chunks_of("x", "y"), [unit(1)])
    assert raw_counts(kb.path) == (0, 0, 0)


def test_fts_finds_codes_and_part_numbers_as_whole_tokens(kb: KnowledgeBase) -> None:
    texts = [
        "Alarm E203 hydraulic pressure low: replace filter HF-2231-B.",
        "Alarm E2031 is a different alarm; valve HV-2231-A.",
        "Press P2 and press P21 share the tank.",
        "Filter HF 2231 B in the spare parts list.",
    ]
    record = DocumentRecord("/kb/notes.md", "Notes", "markdown", "h")
    kb.upsert_document(record, chunks_of(*texts, section=""), [unit(i) for i in range(4)])
    # An empty query text means vectors only: the nearest chunk to unit(i) is chunk i.
    e203, e2031, p2, spaced = (kb.search("", unit(i), top_k=1)[0].chunk_id for i in range(4))

    assert keyword_ids(kb, "E203") == [e203]
    assert keyword_ids(kb, "e203?") == [e203]
    assert set(keyword_ids(kb, "HF-2231-B")) == {e203, spaced}
    assert e2031 not in keyword_ids(kb, "HF-2231-B")
    assert keyword_ids(kb, "P2") == [p2]
    assert keyword_ids(kb, "HV-2231-A") == [e2031]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        '"',
        'say "hello',
        "NEAR(E203 pump, 3)",
        "E203*",
        "-E203",
        "E203 AND OR NOT",
        "text:E203",
        "{text section}: E203",
        "^E203",
        "\x00E203\x00",
        "E203 \ud800",
        "(((",
        "a" * 10_000,
        "ÉCHEC pompe côté",
        "); DROP TABLE chunks; --",
    ],
)
def test_hostile_query_text_never_crashes(kb: KnowledgeBase, query: str) -> None:
    kb.upsert_document(doc(), chunks_of("Alarm E203 pump pressure"), [unit(1)])
    hits = kb.search(query, unit(1), top_k=3)
    assert len(hits) == 1
    assert raw_counts(kb.path) == (1, 1, 1)


def test_fts_query_quotes_every_token() -> None:
    assert fts_query('what does E203 "NEAR" mean?') == '"e203" OR "near"'
    assert fts_query("what is it") == '"what" OR "is" OR "it"'
    assert fts_query("  *** ") is None


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_similarity_is_the_true_cosine_even_for_keyword_only_hits(kb: KnowledgeBase) -> None:
    vectors = [unit(i) for i in range(30)]
    texts = [f"filler text number {i}" for i in range(30)]
    texts[17] = "the only chunk naming HF-2231-B"
    kb.upsert_document(doc(), chunks_of(*texts), vectors)
    query = unit(1234)
    hits = kb.search("HF-2231-B", query, top_k=5, candidates=5)
    assert len(hits) == 5  # of the 5 nearest + 1 found only by keyword
    keyword_only = [h for h in hits if h.vector_rank is None]
    assert [h.text for h in keyword_only] == [texts[17]]
    for hit in hits:
        index = texts.index(hit.text)
        assert hit.similarity == pytest.approx(cosine(query, vectors[index]), abs=1e-5)
    assert hits == sorted(hits, key=lambda h: -h.fused_score)


def test_search_fields_and_fusion(kb: KnowledgeBase) -> None:
    kb.upsert_document(
        DocumentRecord("/kb/p2.pdf", "P2 manual", "pdf", "h"),
        [Chunk(0, "Alarm E203 means low pressure", "E203", 4), Chunk(1, "Unrelated", "Other", 5)],
        [unit(1), unit(2)],
    )
    [top, other] = kb.search("E203", unit(1), top_k=2)
    assert (top.document, top.title, top.section, top.page) == (
        "/kb/p2.pdf",
        "P2 manual",
        "E203",
        4,
    )
    assert (top.vector_rank, top.keyword_rank) == (1, 1)
    assert top.similarity == pytest.approx(1.0, abs=1e-5)
    assert top.fused_score == pytest.approx(2 / 61)
    assert other.keyword_rank is None
    assert kb.search("E203", unit(1), top_k=0) == []
    with pytest.raises(KnowledgeBaseError, match="dimensions"):
        kb.search("E203", [1.0, 0.0], top_k=1)


def test_closed_kb_raises(tmp_path: Path) -> None:
    kb = KnowledgeBase.open(tmp_path / "kb.sqlite3", dim=DIM, embedding_identity=IDENTITY)
    kb.close()
    kb.close()
    with pytest.raises(KnowledgeBaseError, match="closed"):
        kb.chunk_count()


# --- the fast dense path (in-memory sign bits + int8) -----------------------------------------

WIDE = 384


def clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 32 shared centres: every query has close neighbours, many near-ties."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(32, WIDE))
    vectors = centres[rng.integers(0, 32, n)] + 0.8 * rng.normal(size=(n, WIDE))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_fast_vector_path_recall_and_exact_similarity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hamming keeps 200 of 4000 chunks (5%) for int8 ranking: the coarse stage really filters.
    monkeypatch.setattr(vector_index, "_COARSE_MIN", 200)
    monkeypatch.setattr(vector_index, "_COARSE_FACTOR", 20)
    vectors = clustered(4000, seed=1)
    with KnowledgeBase.open(tmp_path / "kb.sqlite3", dim=WIDE, embedding_identity="w") as kb:
        for start in range(0, len(vectors), 1000):
            part = vectors[start : start + 1000]
            kb.upsert_document(
                DocumentRecord(f"/kb/{start}.md", "t", "markdown", "h"),
                chunks_of(*(f"chunk {start + i}" for i in range(len(part)))),
                part.tolist(),
            )
        queries = clustered(40, seed=2)
        recalls, shortfalls = [], []
        for query in queries:
            exact = vectors @ query
            best = np.argsort(-exact)[:4]
            hits = kb.search("", query.tolist(), top_k=4, candidates=10)
            found = [h.chunk_id - 1 for h in hits]  # chunk ids are 1.. in insertion order
            recalls.append(len(set(found) & set(best.tolist())) / 4)
            shortfalls.append(float(exact[best[-1]] - min(exact[found])))
            for hit, index in zip(hits, found, strict=True):
                assert hit.similarity == pytest.approx(float(exact[index]), abs=1e-5)
    assert np.mean(recalls) >= 0.95, recalls
    # A miss is a near-tie: what we return is never meaningfully less similar than the truth.
    assert max(shortfalls) < 0.01, shortfalls


def test_vector_index_follows_changes_made_by_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite3"
    with (
        KnowledgeBase.open(path, dim=DIM, embedding_identity=IDENTITY) as reader,
        KnowledgeBase.open(path, dim=DIM, embedding_identity=IDENTITY) as writer,
    ):
        writer.upsert_document(doc("/kb/a.md"), chunks_of("alpha"), [unit(1)])
        assert [h.text for h in reader.search("", unit(2), top_k=5)] == ["alpha"]
        writer.upsert_document(doc("/kb/b.md"), chunks_of("beta"), [unit(2)])
        assert [h.text for h in reader.search("", unit(2), top_k=5)] == ["beta", "alpha"]
        writer.remove_document("/kb/b.md")
        assert [h.text for h in reader.search("", unit(2), top_k=5)] == ["alpha"]


def test_fast_path_leaves_the_file_format_unchanged(tmp_path: Path) -> None:
    """The index lives in memory only: files from before and after it are interchangeable."""
    path = tmp_path / "kb.sqlite3"

    def schema() -> list[tuple[str, str]]:
        conn = apsw.Connection(str(path))
        try:
            return [
                (str(n), str(s)) for n, s in conn.execute("SELECT name, sql FROM sqlite_master")
            ]
        finally:
            conn.close()

    KnowledgeBase.open(path, dim=DIM, embedding_identity=IDENTITY).close()
    before = schema()
    with KnowledgeBase.open(path, dim=DIM, embedding_identity=IDENTITY) as kb:
        kb.upsert_document(doc(), chunks_of("E203 text"), [unit(1)])
        kb.warm()
        assert [h.text for h in kb.search("E203", unit(1), top_k=2)] == ["E203 text"]
    assert schema() == before


def test_common_terms_are_dropped_from_keyword_search_of_a_large_kb(
    kb: KnowledgeBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keywords, "_KEYWORD_BUDGET_MIN", 10)
    monkeypatch.setattr(keywords, "_KEYWORD_BUDGET_FRACTION", 0.0)
    texts = [f"pump chunk{i}" + (" seal" if i < 8 else "") for i in range(40)]
    texts[3] += " E203"
    kb.upsert_document(doc(), chunks_of(*texts, section=""), [unit(i) for i in range(40)])
    ids = {kb.search("", unit(i), top_k=1)[0].chunk_id: i for i in range(40)}
    # pump (40 chunks) is over the budget of 10; E203 (1) + seal (8) fit, rarest first.
    assert sorted(ids[c] for c in keyword_ids(kb, "pump seal E203")) == list(range(8))
    [best] = [h for h in kb.search("pump seal E203", unit(99), top_k=10) if h.keyword_rank == 1]
    assert ids[best.chunk_id] == 3
    assert keyword_ids(kb, "pump") == []
    # Small KBs are never pruned.
    monkeypatch.setattr(keywords, "_KEYWORD_BUDGET_MIN", 2_000)
    assert len(keyword_ids(kb, "pump")) == 10  # keyword_ids asks for top 10
