"""`make bench`: every benchmark in one run, each against its baseline, written as Markdown.

Not a test: the numbers are reported, never asserted (shared machines are noisy). Ratios are
ours / baseline, measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from gateway.logging import configure_logging
from tests.bench import diagnosis, e2e, retrieval
from tests.bench.stats import Summary


def _fmt(s: Summary) -> str:
    return f"{s.p50_ms:.1f} / {s.p95_ms:.1f}"


def report(e2e_result: dict[str, Any], retrieval_rows: list[dict[str, Any]]) -> str:
    cpu = platform.processor() or platform.machine()
    lines = [
        "# edge-gateway benchmark",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {cpu}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB. Reproduce: `make bench`.",
        "",
        "## Gateway over MQTT vs llama-cpp-python in-process",
        "",
        f"{e2e_result['questions']} questions from `configs/demo-kb/calibration-questions.txt`, "
        "one at a time, bundled SmolLM2-135M-Instruct, greedy decoding, "
        f"{e2e_result['threads']} threads, max_tokens as configured. Gateway: terminal publish "
        "to answer received (MQTT QoS 1 both ways, journal fsync, retrieval, worker IPC). "
        "Baseline: `Llama.create_completion` in the bench process on the same prompt (same "
        "retrieved chunks, the GGUF's chat template, same thread wait policy). Only "
        f"the {e2e_result['answered_by_model']} questions the model answered are compared "
        f"({e2e_result['fallbacks']} fallbacks, {e2e_result['errors']} errors).",
        "",
        "| | p50 / p95 ms | completion tokens |",
        "|---|---|---|",
        f"| gateway (MQTT end to end) | {_fmt(e2e_result['gateway'])} | "
        f"{e2e_result['gateway_completion_tokens']} |",
        f"| llama-cpp-python in-process | {_fmt(e2e_result['baseline'])} | "
        f"{e2e_result['baseline_completion_tokens']} |",
        f"| **ratio gateway / baseline** | **{e2e_result['p50_ratio']:.3f} / "
        f"{e2e_result['p95_ratio']:.3f}** | target ≤ 1.05 at p50 |",
        "",
        "## The same gateway over NATS vs MQTT",
        "",
        f"The same {e2e_result['mqtt_bus'].n} questions (model-answered on both buses), same "
        "gateway process and model, asked one at a time: MQTT 5 QoS 1 publish to answer "
        "received, and a NATS core request to its reply.",
        "",
        "| bus | p50 / p95 ms |",
        "|---|---|",
        f"| MQTT | {_fmt(e2e_result['mqtt_bus'])} |",
        f"| NATS | {_fmt(e2e_result['nats_bus'])} |",
        f"| **ratio NATS / MQTT** | **{e2e_result['nats_mqtt_p50_ratio']:.3f} / "
        f"{e2e_result['nats_mqtt_p95_ratio']:.3f}** |",
        "",
        "## Retrieval vs numpy brute force",
        "",
        "Hybrid search (sqlite-vec KNN + FTS5 BM25 + fusion + chunk fetch) vs `vectors @ q` and "
        "`argpartition` over the same float32 vectors in memory; 384 dimensions, top 4.",
        "",
        "| chunks | ours p50 / p95 ms | numpy p50 / p95 ms | ratio p50 / p95 |",
        "|---|---|---|---|",
    ]
    for row in retrieval_rows:
        lines.append(
            f"| {row['chunks']:,} | {_fmt(row['ours'])} | {_fmt(row['numpy'])} | "
            f"{row['p50_ratio']:.2f} / {row['p95_ratio']:.2f} |"
        )
    lines += ["", "Target: retrieval p95 within 2x of numpy at 100k chunks.", ""]
    return "\n".join(lines)


def main() -> None:
    # The worker runs llama.cpp with OMP_WAIT_POLICY=PASSIVE (gateway/worker/process.py); the
    # baseline must too. libgomp reads it when loaded, so `make bench` sets it before Python.
    if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        raise SystemExit("run with OMP_WAIT_POLICY=PASSIVE (make bench does)")
    configure_logging("warning", "console")
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench-report"))
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--retrieval-queries", type=int, default=100)
    parser.add_argument(
        "--skip-retrieval", action="store_true", help="smoke runs: only the end-to-end part"
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--flood-questions", type=int, default=10)
    parser.add_argument(
        "--only-diagnosis", action="store_true", help="run only the device-event benchmark"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = Path.home() / ".cache" / "edge-gateway" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        diag = diagnosis.run(
            Path(tmp),
            cache,
            events=args.events,
            n_questions=args.flood_questions,
            max_tokens=args.max_tokens,
        )
    diag_text = "\n".join(diagnosis.report_lines(diag))
    if args.only_diagnosis:
        (args.out / "report-diagnosis.md").write_text(diag_text)
        print(diag_text)
        return
    with tempfile.TemporaryDirectory() as tmp:
        e2e_result = e2e.run(Path(tmp), cache, n=args.questions, max_tokens=args.max_tokens)
    retrieval_rows = [] if args.skip_retrieval else retrieval.run(queries=args.retrieval_queries)
    text = report(e2e_result, retrieval_rows) + "\n" + diag_text
    (args.out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
