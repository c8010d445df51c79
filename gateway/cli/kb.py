"""CLI commands over the knowledge base: ingest, list, stats, remove, calibrate.

They run in-process (a batch job, not the daemon) with their own embedder; SQLite WAL lets them
run while the gateway is serving, which picks up the new chunks on its next search.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.config import Settings
from gateway.rag.embedder import LlamaEmbedder
from gateway.rag.opening import open_knowledge_base


def ingest(settings: Settings, paths: list[Path]) -> int:
    from gateway.rag.ingest import ingest_paths

    kb, embedding_model = open_knowledge_base(settings)
    try:
        # One thread: the gateway may be generating on the other cores, and llama.cpp threads
        # spin against each other (a short embedding went from 8.5 ms to 1 s with 2 threads).
        with LlamaEmbedder(embedding_model, n_threads=1) as embedder:
            report = ingest_paths(
                kb,
                embedder,
                paths,
                chunk_chars=settings.kb.chunk_chars,
                overlap=settings.kb.chunk_overlap_chars,
                progress=sys.stderr.isatty(),
            )
        for item in report.files:
            detail = item.error or f"{item.chunks} chunks"
            print(f"{item.outcome:9} {item.path}  ({detail})")
        summary = ", ".join(f"{n} {k}" for k, n in report.summary().items() if n)
        print(f"{summary or 'nothing to do'} in {report.seconds:.1f} s; kb: {settings.kb_path}")
        return 0 if report.ok else 1
    finally:
        kb.close()


def list_documents(settings: Settings) -> int:
    kb, _ = open_knowledge_base(settings)
    try:
        documents = kb.list_documents()
        for doc in documents:
            print(f"{doc.chunk_count:5} chunks  {doc.kind:8} {doc.ingested_at}  {doc.path}")
        print(f"{len(documents)} documents")
        return 0
    finally:
        kb.close()


def stats(settings: Settings) -> int:
    kb, embedding_model = open_knowledge_base(settings)
    try:
        s = kb.stats()
        print(f"path:               {settings.kb_path}")
        print(f"documents:          {s.documents}")
        print(f"chunks:             {s.chunks}")
        print(f"size:               {s.db_bytes / 1e6:.1f} MB")
        print(f"version:            {s.version}")
        print(f"embedding model:    {embedding_model}")
        print(f"embedding identity: {s.embedding_identity} ({s.dim} dimensions)")
        return 0
    finally:
        kb.close()


def remove(settings: Settings, paths: list[Path], *, missing: bool) -> int:
    from gateway.rag.ingest import document_key, remove_missing

    if not paths and not missing:
        print("name documents to remove, or --missing", file=sys.stderr)
        return 2
    kb, _ = open_knowledge_base(settings)
    try:
        status = 0
        for path in paths:
            key = document_key(path)
            if kb.remove_document(key):
                print(f"removed  {key}")
            else:
                print(f"not in the knowledge base: {key}", file=sys.stderr)
                status = 1
        if missing:
            for key in remove_missing(kb):
                print(f"removed  {key}  (file is gone)")
        return status
    finally:
        kb.close()


def calibrate(settings: Settings, questions_file: Path) -> int:
    from gateway.rag.calibrate import OFF_TOPIC_QUESTIONS, load_questions
    from gateway.rag.calibrate import calibrate as run_calibration

    off_topic = list(OFF_TOPIC_QUESTIONS)
    if questions_file.suffix == ".jsonl":
        # An eval question set: its in-domain questions, and its off-topic ones beside ours.
        from gateway.evaluation.cases import load_cases

        cases = load_cases(questions_file)
        questions = [c.question for c in cases if c.in_domain]
        off_topic += [c.question for c in cases if not c.in_domain]
    else:
        questions = load_questions(questions_file)
    kb, embedding_model = open_knowledge_base(settings)
    try:
        with LlamaEmbedder(embedding_model, n_threads=1) as embedder:
            report = run_calibration(
                kb,
                embedder.embed,
                questions,
                off_topic_questions=off_topic,
                top_k=settings.kb.top_k,
            )
    finally:
        kb.close()
    for label, dist in (("in-domain", report.in_domain), ("off-topic", report.off_topic)):
        print(
            f"{label:10} n={dist.n:3}  min={dist.min:.3f}  p10={dist.p10:.3f}  "
            f"p50={dist.p50:.3f}  p90={dist.p90:.3f}  max={dist.max:.3f}"
        )
    rec = report.recommendation
    print(f"\nrecommended kb.similarity_threshold = {rec.threshold:.3f}")
    print(rec.explanation)
    print(f"(configured now: {settings.kb.similarity_threshold:.3f})")
    weak = [s for s in report.in_domain_scores if s.best < rec.threshold]
    for score in weak:
        print(f"  below threshold: {score.best:.3f}  {score.question}")
    return 0


def export(settings: Settings, out: Path) -> int:
    from gateway.rag.backup import export_kb

    report = export_kb(settings.kb_path, out)
    m = report.manifest
    print(
        f"exported {m.documents} documents, {m.chunks} chunks to {out} "
        f"({report.bytes / 1e6:.1f} MB, {report.seconds:.2f} s)\n"
        f"sha256 {m.sha256}  embedding {m.embedding_identity} ({m.dim} dimensions)"
    )
    return 0


def import_(settings: Settings, archive: Path) -> int:
    from gateway.rag.backup import import_kb
    from gateway.rag.embedding_model import embedding_model_identity, resolve_embedding_model
    from gateway.rag.opening import embedding_dim

    model = resolve_embedding_model(settings.kb, settings.cache_dir)
    m = import_kb(
        archive,
        settings.kb_path,
        embedding_identity=embedding_model_identity(model),
        dim=embedding_dim(model),
    )
    print(
        f"imported {m.documents} documents, {m.chunks} chunks from {archive} "
        f"(exported {m.created_at}) into {settings.kb_path}"
    )
    return 0
