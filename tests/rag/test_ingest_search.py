"""Ingest the demo knowledge base with the real model and search it (real sqlite-vec + FTS5)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import apsw
import numpy as np
import pytest
import sqlite_vec

from gateway.rag import vector_index
from gateway.rag.calibrate import load_questions
from gateway.rag.embedder import LlamaEmbedder
from gateway.rag.ingest import ingest_paths, remove_missing
from gateway.rag.store import KnowledgeBase

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo-kb"


class CountingEmbedder:
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: LlamaEmbedder) -> None:
        self.inner = inner
        self.texts = 0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts += len(texts)
        return self.inner.embed(texts)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    target = tmp_path / "docs"
    shutil.copytree(DEMO, target)
    return target


@pytest.fixture
def kb(tmp_path: Path, embedder: LlamaEmbedder) -> Iterator[KnowledgeBase]:
    path = tmp_path / "kb.sqlite3"
    with KnowledgeBase.open(path, dim=embedder.dim, embedding_identity=embedder.identity) as opened:
        yield opened


def ingest(kb: KnowledgeBase, embedder: object, paths: list[Path]):  # type: ignore[no-untyped-def]
    return ingest_paths(kb, embedder, paths, chunk_chars=1200, overlap=150, progress=False)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory, embedder: LlamaEmbedder
) -> Iterator[KnowledgeBase]:
    """The demo KB, ingested once for the read-only search tests of this module."""
    folder = tmp_path_factory.mktemp("demo")
    shutil.copytree(DEMO, folder / "docs")
    path = folder / "kb.sqlite3"
    with KnowledgeBase.open(path, dim=embedder.dim, embedding_identity=embedder.identity) as kb:
        report = ingest(kb, embedder, [folder / "docs"])
        assert report.ok, report.failed
        yield kb


def test_ingest_is_content_hash_based(
    kb: KnowledgeBase, embedder: LlamaEmbedder, docs: Path
) -> None:
    counting = CountingEmbedder(embedder)
    first = ingest(kb, counting, [docs])
    assert first.summary() == {"added": 4, "replaced": 0, "unchanged": 0, "failed": 0}
    assert counting.texts > 0
    names = sorted(Path(f.path).name for f in first.files)
    assert "calibration-questions.txt" not in names  # listed in the folder's .kbignore
    version = kb.version

    counting.texts = 0
    second = ingest(kb, counting, [docs])
    assert second.summary()["unchanged"] == 4
    assert counting.texts == 0, "unchanged files must not be embedded again"
    assert kb.version == version

    notes = docs / "robot-r1-notes.txt"
    notes.write_text(notes.read_text() + "\nEXTRA\nNew paragraph about the R1 teach pendant.\n")
    third = ingest(kb, counting, [docs])
    assert third.summary() == {"added": 0, "replaced": 1, "unchanged": 3, "failed": 0}
    assert kb.version == version + 1


def test_one_bad_file_does_not_stop_the_others(
    kb: KnowledgeBase, embedder: LlamaEmbedder, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.md").write_text("# Pump\n\nThe pump P7 needs oil.\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    (folder / ".hidden.md").write_text("# Hidden\n\nnot ingested\n")
    (folder / "drawing.dwg").write_bytes(b"ignored in folders")
    explicit = tmp_path / "notes.docx"
    explicit.write_bytes(b"PK")
    report = ingest(kb, embedder, [folder, explicit, tmp_path / "missing-dir"])
    outcomes = {Path(f.path).name: f.outcome for f in report.files}
    assert outcomes == {
        "good.md": "added",
        "broken.pdf": "failed",
        "notes.docx": "failed",
        "missing-dir": "failed",
    }
    assert not report.ok
    errors = {Path(f.path).name: f.error or "" for f in report.failed}
    assert "broken.pdf" in errors["broken.pdf"]
    assert "unsupported" in errors["notes.docx"]
    assert "no such file" in errors["missing-dir"]
    assert [d.title for d in kb.list_documents()] == ["Pump"]


def test_remove_missing(kb: KnowledgeBase, embedder: LlamaEmbedder, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    for name in ("a.md", "b.md"):
        (folder / name).write_text(f"# {name}\n\nText of {name}.\n")
    assert ingest(kb, embedder, [folder]).ok
    (folder / "a.md").unlink()
    removed = remove_missing(kb)
    assert [Path(p).name for p in removed] == ["a.md"]
    assert [Path(d.path).name for d in kb.list_documents()] == ["b.md"]
    assert remove_missing(kb) == []


def search(kb: KnowledgeBase, embedder: LlamaEmbedder, question: str, top_k: int = 4):  # type: ignore[no-untyped-def]
    return kb.search(question, embedder.embed([question])[0], top_k=top_k)


def test_e203_question_finds_the_e203_section_first(
    demo: KnowledgeBase, embedder: LlamaEmbedder
) -> None:
    hits = search(demo, embedder, "what does alarm E203 on press P2 mean?")
    assert hits[0].section == "4 Alarms > E203 Hydraulic pressure low"
    assert Path(hits[0].document).name == "press-p2-manual.md"
    assert hits[0].title == "Hydraulic Press P2 - Maintenance Manual"
    assert hits[0].similarity > 0.45


@pytest.mark.parametrize(
    ("question", "document", "section_part"),
    [
        ("My conveyor belt is slipping", "conveyor-c3-guide.html", "C-12 Belt slip"),
        ("How do I change the encoder battery of the robot?", "robot-r1-notes.txt", "BATTERY"),
        (
            "Which filter element does the P2 pressure filter use?",
            "press-p2-manual.md",
            "HF-2231-B",
        ),
    ],
)
def test_questions_find_their_section(
    demo: KnowledgeBase, embedder: LlamaEmbedder, question: str, document: str, section_part: str
) -> None:
    hits = search(demo, embedder, question)
    assert any(Path(h.document).name == document and section_part in h.section for h in hits[:2]), [
        (Path(h.document).name, h.section) for h in hits
    ]


def test_part_number_found_in_log_records(demo: KnowledgeBase, embedder: LlamaEmbedder) -> None:
    hits = search(demo, embedder, "HF-2231-B", top_k=8)
    keyword_hits = [h for h in hits if h.keyword_rank is not None]
    assert len(keyword_hits) >= 5
    assert all("HF-2231-B" in h.text or "HF-2231-B" in h.section for h in keyword_hits)


def test_off_topic_scores_well_below_in_domain(
    demo: KnowledgeBase, embedder: LlamaEmbedder
) -> None:
    in_domain = [
        "what does alarm E203 on press P2 mean?",
        "How do I lock out conveyor C3?",
        "The robot gripper does not reach vacuum",
    ]
    off_topic = ["How do I bake a chocolate cake?", "Who won the football match last night?"]
    best_in = min(max(h.similarity for h in search(demo, embedder, q)) for q in in_domain)
    best_off = max(max(h.similarity for h in search(demo, embedder, q)) for q in off_topic)
    assert best_in > 0.45
    assert best_off < 0.25
    assert best_in - best_off > 0.2


def test_fast_vector_path_recall_on_the_demo_kb(
    demo: KnowledgeBase, embedder: LlamaEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real embeddings: the sign-bit stage keeps only 16 chunks, int8 ranks them; compare with
    exact float cosine over the stored vectors."""
    monkeypatch.setattr(vector_index, "_COARSE_MIN", 16)
    monkeypatch.setattr(vector_index, "_COARSE_FACTOR", 4)
    conn = apsw.Connection(str(demo.path))
    conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    try:
        rows = conn.execute("SELECT chunk_id, embedding FROM chunk_vectors").fetchall()
    finally:
        conn.close()
    ids = np.array([int(r[0]) for r in rows])
    matrix = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    assert len(ids) > 16 * 2, "the demo KB must be larger than the coarse stage"
    questions = load_questions(DEMO / "calibration-questions.txt")
    recalls = []
    for vector in embedder.embed(questions):
        query = np.asarray(vector) / np.linalg.norm(vector)
        exact = set(ids[np.argsort(-(matrix @ query))[:4]].tolist())
        found = {h.chunk_id for h in demo.search("", vector, top_k=4)}
        recalls.append(len(found & exact) / 4)
    assert np.mean(recalls) >= 0.95, recalls
