"""`edge-gateway eval QUESTIONS.jsonl` (the plant's acceptance test) and `edge-gateway kb search`
(hit testing: what a question retrieves and quotes, without the model)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gateway.cli.exits import EXIT_FAILED, EXIT_OK
from gateway.config import Settings
from gateway.evaluation.cases import CaseFileError, load_cases
from gateway.evaluation.report import print_totals, progress_line, write_results
from gateway.evaluation.runner import run
from gateway.evaluation.scoring import CaseResult, totals
from gateway.questions.composing import candidate_texts, choose_quotes, sentence_affinities
from gateway.rag.embedder import LlamaEmbedder
from gateway.rag.opening import open_knowledge_base
from models.answer import Answer, AnswerMode


def evaluate(
    settings: Settings, questions: Path, *, modes: Sequence[AnswerMode], out: Path | None
) -> int:
    try:
        cases = load_cases(questions)
    except CaseFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    inside = sum(c.in_domain for c in cases)
    print(
        f"{len(cases)} questions ({inside} in-domain, {len(cases) - inside} off-topic) against "
        f"{settings.kb_path}, modes: {', '.join(modes)}",
        file=sys.stderr,
    )

    def show(index: int, result: CaseResult, _answer: Answer) -> None:
        print(progress_line(index, len(cases), result), file=sys.stderr, flush=True)

    results = run(settings, cases, modes=modes, on_result=show)
    for mode, rows in results.items():
        t = totals([r for r, _ in rows])
        print(f"\n== mode {mode}")
        print_totals(t, sys.stdout)
        if out is not None:
            write_results(
                out / mode,
                [r for r, _ in rows],
                t,
                [a.model_dump(mode="json") for _, a in rows],
            )
    if out is not None:
        print(f"\nper-question results and totals written under {out}/")
    return EXIT_OK


def search(settings: Settings, question: str, *, top_k: int | None) -> int:
    kb, embedding_model = open_knowledge_base(settings)
    try:
        with LlamaEmbedder(embedding_model, n_threads=1) as embedder:
            (vector,) = embedder.embed([question])
            hits = kb.search(question, vector, top_k=top_k or settings.kb.top_k)
            texts = [h.text for h in hits]
            candidates = candidate_texts(texts)
            query = np.asarray(vector, dtype=np.float64)
            similarities = [
                (np.asarray(embedder.embed(group), dtype=np.float64) @ query).tolist()
                if group
                else []
                for group in candidates
            ]
            affinities = sentence_affinities(question, candidates, similarities)
            quotes = choose_quotes(
                question, texts, affinities, max_chars=settings.answer.quote_max_chars
            )
    finally:
        kb.close()
    threshold = settings.kb.similarity_threshold
    best = max((h.similarity for h in hits), default=-1.0)
    verdict = "answered" if best >= threshold else "FALLBACK (below the threshold)"
    print(f"best similarity {best:.3f}, threshold {threshold:.2f}: {verdict}")
    for rank, (hit, quote) in enumerate(zip(hits, quotes, strict=True), 1):
        where = f"{hit.document} > {hit.section}" if hit.section else hit.document
        print(f"\n[{rank}] score {hit.similarity:.3f}  {where}  (chunk {hit.chunk_id})")
        print(f"    quote: {quote.text if quote is not None else '(none)'}")
        preview = " ".join(hit.text.split())
        print(f"    text:  {preview[:300]}{'...' if len(preview) > 300 else ''}")
    return EXIT_OK
