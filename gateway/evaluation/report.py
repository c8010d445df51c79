"""The eval report: one line per question while it runs, the totals at the end, and the same
as JSON files a plant keeps beside its release notes."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from gateway.evaluation.scoring import CaseResult, Count, Totals


def _mark(value: bool | None) -> str:
    return "-" if value is None else ("y" if value else "n")


def progress_line(index: int, total: int, result: CaseResult) -> str:
    if result.in_domain:
        what = (
            f"doc {_mark(result.doc_in_sources)}/{_mark(result.doc_first)} "
            f"chunks {_mark(result.fact_in_chunks)} quotes {_mark(result.fact_in_quotes)} "
            f"text {_mark(result.fact_in_text)}"
            + (" WRONG-FALLBACK" if result.wrong_fallback else "")
        )
    else:
        what = "off-topic " + ("fell back" if result.fallback else "ANSWERED")
    flags = "".join(
        [
            " UNSUPPORTED" if result.unsupported_published else "",
            " LOOP" if result.loop_published else "",
            " (loop stopped)" if result.loop_stopped else "",
            " (replaced)" if result.replaced else "",
        ]
    )
    return f"[{index}/{total}] {result.id}: {what}{flags} {result.latency_ms:.0f} ms"


TOTAL_ROWS: tuple[tuple[str, str], ...] = (
    ("expected document among sources", "doc_in_sources"),
    ("expected document first", "doc_first"),
    ("key fact in the retrieved chunks", "fact_in_chunks"),
    ("key fact in the quotes", "fact_in_quotes"),
    ("key fact in the answer text", "fact_in_text"),
    ("key fact shown (quotes or text)", "fact_shown"),
    ("answers with an unsupported statement", "unsupported_published"),
    ("answers published with a loop", "loops_published"),
    ("generations stopped for looping", "loops_stopped"),
    ("generated answers replaced by quotes", "replaced"),
    ("in-domain questions that fell back (wrong)", "wrong_fallbacks"),
    ("off-topic questions that fell back", "off_topic_fallbacks"),
)


def print_totals(t: Totals, out: TextIO) -> None:
    out.write(f"\n{t.in_domain} in-domain and {t.off_topic} off-topic questions\n")
    for label, attr in TOTAL_ROWS:
        value: Count = getattr(t, attr)
        out.write(f"  {label:<45} {value}\n")
    out.write(f"  {'latency p50 / p95':<45} {t.latency_p50_ms:.0f} / {t.latency_p95_ms:.0f} ms\n")
    out.write(f"  {'best quote ready (first partial) p50':<45} {t.quote_p50_ms:.0f} ms\n")
    out.write(f"  {'prompt tokens p50 (generated answers)':<45} {t.prompt_tokens_p50:.0f}\n")


def totals_dict(t: Totals) -> dict[str, Any]:
    out: dict[str, Any] = {"in_domain": t.in_domain, "off_topic": t.off_topic}
    for _, attr in TOTAL_ROWS:
        value: Count = getattr(t, attr)
        out[attr] = {"hits": value.hits, "of": value.of}
    out["latency_p50_ms"] = _number(t.latency_p50_ms, 1)
    out["latency_p95_ms"] = _number(t.latency_p95_ms, 1)
    out["quote_p50_ms"] = _number(t.quote_p50_ms, 1)
    out["quote_to_total_p50"] = _number(t.quote_to_total_p50, 3)
    out["prompt_tokens_p50"] = _number(t.prompt_tokens_p50, 0)
    return out


def _number(value: float, digits: int) -> float | None:
    """JSON has no NaN: a figure with no sample (no generated answer, say) is null."""
    return None if math.isnan(value) else round(value, digits)


def write_results(
    directory: Path, results: Sequence[CaseResult], t: Totals, answers: Sequence[dict[str, Any]]
) -> None:
    """results.jsonl (per question, with the answer as published) and totals.json."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "results.jsonl").open("w", encoding="utf-8") as fh:
        for result, answer in zip(results, answers, strict=True):
            row = {**asdict(result), "fact_shown": result.fact_shown, "answer": answer}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    (directory / "totals.json").write_text(
        json.dumps(totals_dict(t), indent=2) + "\n", encoding="utf-8"
    )
