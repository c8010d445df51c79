"""`make bench`: every benchmark in one run, each against its baseline, written as Markdown with
PNG charts under --out (bench-report/ by default; docs/performance.md links it).

Not a test: the numbers are reported, never asserted (shared machines are noisy). Ratios are
ours / baseline, measured in the same run on the same machine. `make bench BENCH_ARGS="..."`
passes the arguments below (e.g. `--questions 12 --levels 1,4 --skip-retrieval` for a quick run).
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

from gateway.config import Settings
from gateway.logging import configure_logging
from gateway.rag.embedding_model import resolve_embedding_model
from gateway.rag.opening import generation_model_path
from gateway.worker.engine import resolve_threads
from tests.bench import (
    charts,
    concurrency,
    conversations,
    diagnosis,
    e2e,
    footprint,
    prefix,
    retrieval,
)
from tests.bench.quality import bench as quality
from tests.bench.stats import Summary, ratio


def _fmt(s: Summary) -> str:
    return f"{s.p50_ms:.1f} / {s.p95_ms:.1f}"


def _run_fmt(run: e2e.Run) -> str:
    return f"{_fmt(Summary.of(run.latencies))} | {run.per_min:.1f}"


def e2e_lines(r: dict[str, Any]) -> list[str]:
    lines = [
        "## Gateway over MQTT vs llama-cpp-python in-process vs its OpenAI server + MQTT bridge",
        "",
        f"{r['answered_by_model']} of {r['questions']} questions from "
        "`configs/demo-kb/calibration-questions.txt` (those the model answered; "
        f"{r['fallbacks']} fallbacks, {r['errors']} errors), bundled SmolLM2-135M-Instruct, "
        f"greedy, {r['threads']} threads, flash attention, max_tokens {r['max_tokens']}, answer "
        "cache off. N terminals in a closed loop (each asks its next question when its answer "
        "arrived); latency from the terminal's publish to the answer. Gateway: MQTT QoS 1 both "
        "ways, journal fsync, retrieval, worker IPC, outbox. In-process: `create_completion` on "
        "the prompt the gateway built, N threads sharing the one `Llama` behind a lock. OpenAI "
        "server: `python -m llama_cpp.server` with the same model and settings, behind "
        "`tests/bench/bridge.py` on the same broker, sent the same prompt (it does no retrieval "
        "of its own: a favour to the baseline).",
        "",
        "| terminals | system | p50 / p95 ms | answers/min | completion tokens |",
        "|---|---|---|---|---|",
    ]
    for k in r["levels"]:
        lines += [
            f"| {k} | gateway (MQTT end to end) | {_run_fmt(r['gateway'][k])} | "
            f"{r['gateway_tokens'][k]} |",
            f"| {k} | llama-cpp-python in-process | {_run_fmt(r['inprocess'][k])} | "
            f"{r['inprocess_tokens'][k]} |",
            f"| {k} | OpenAI server + MQTT bridge | {_run_fmt(r['server'][k])} | |",
        ]
    lines += [
        "",
        "Ratios, ours / baseline (below 1 is faster for latency; above 1 is better for "
        "answers/min):",
        "",
        "| terminals | vs in-process p50 / p95 / answers/min | vs OpenAI server + bridge "
        "p50 / p95 / answers/min |",
        "|---|---|---|",
    ]
    for k in r["levels"]:
        a = e2e.ratios(r["gateway"][k], r["inprocess"][k])
        b = e2e.ratios(r["gateway"][k], r["server"][k])
        lines.append(
            f"| {k} | **{a[0]:.3f} / {a[1]:.3f} / {a[2]:.3f}** | "
            f"**{b[0]:.3f} / {b[1]:.3f} / {b[2]:.3f}** |"
        )
    lines += [
        "",
        "Targets: overhead ≤ 5 % at p50 with one terminal (ratio ≤ 1.05 vs in-process); at "
        "least as fast as the OpenAI server + bridge at every level, faster at 4+.",
        "",
        "![latency distributions](e2e-latency.png)",
        "",
        "## NATS vs MQTT (same gateway, one terminal)",
        "",
        f"The first {r['nats'].n} of those questions: MQTT from the one-terminal run above, "
        "then over NATS core request/reply to the same gateway.",
        "",
        "| bus | p50 / p95 ms |",
        "|---|---|",
        f"| MQTT 5 QoS 1 publish → answer | {_fmt(r['mqtt_seq'])} |",
        f"| NATS core request → reply | {_fmt(r['nats'])} |",
        f"| **ratio NATS / MQTT** | **{ratio(r['nats'].p50_ms, r['mqtt_seq'].p50_ms):.3f} / "
        f"{ratio(r['nats'].p95_ms, r['mqtt_seq'].p95_ms):.3f}** |",
        "",
        "## Streaming: first partial answer vs complete answer",
        "",
        f"{r['stream_first'].n} questions with `stream: true`, one at a time "
        f"({r['stream_pieces']:.0f} partials per answer on average); the same questions without "
        "streaming for comparison of the complete answer.",
        "",
        "| | p50 / p95 ms |",
        "|---|---|",
        f"| first partial | {_fmt(r['stream_first'])} |",
        f"| final answer (streaming) | {_fmt(r['stream_final'])} |",
        f"| final answer (not streaming) | {_fmt(r['plain_final'])} |",
        f"| **first partial / final (p50)** | "
        f"**{ratio(r['stream_first'].p50_ms, r['stream_final'].p50_ms):.3f}** "
        "(target < 0.10) |",
        f"| **final streaming / not streaming (p50)** | "
        f"**{ratio(r['stream_final'].p50_ms, r['plain_final'].p50_ms):.3f}** |",
        "",
        "## Answer cache: the same question again",
        "",
        f"{r['uncached'].n} questions, each asked once and then again under a new id "
        f"(answer cache on; {r['cache_hits']} of {r['cached'].n} repeats were cache hits).",
        "",
        "| | p50 / p95 ms |",
        "|---|---|",
        f"| first time (model) | {_fmt(r['uncached'])} |",
        f"| again (cache) | {_fmt(r['cached'])} (target p95 < 20 ms) |",
        f"| **ratio cached / uncached (p50)** | "
        f"**{ratio(r['cached'].p50_ms, r['uncached'].p50_ms):.4f}** |",
        "",
        "![streaming, cache and prefix reuse](stream-cache-prefix.png)",
        "",
    ]
    return lines


def target_lines(r: dict[str, Any]) -> list[str]:
    """Issue 7's targets against this run; docs/performance.md says why a missed one is."""
    gateway, worker = footprint.peak(r["memory"])
    one = 1 if 1 in r["levels"] else r["levels"][0]
    rows = [
        (
            "gateway overhead at p50, 1 terminal (vs in-process)",
            e2e.ratios(r["gateway"][one], r["inprocess"][one])[0],
            "≤ 1.05",
            lambda v: v <= 1.05,
        ),
        *(
            (
                f"p50 vs OpenAI server + bridge, {k} terminals",
                e2e.ratios(r["gateway"][k], r["server"][k])[0],
                "≤ 1" if k < 4 else "< 1",
                (lambda v: v <= 1.0) if k < 4 else (lambda v: v < 1.0),
            )
            for k in r["levels"]
        ),
        (
            "first partial / complete answer (p50)",
            ratio(r["stream_first"].p50_ms, r["stream_final"].p50_ms),
            "< 0.10",
            lambda v: v < 0.10,
        ),
        ("cached answer p95 ms", r["cached"].p95_ms, "< 20", lambda v: v < 20),
        (
            "gateway + worker RSS MB",
            (gateway.rss + worker.rss) / 1e6,
            "< 400",
            lambda v: v < 400,
        ),
        ("cold start to READY s (slowest)", max(r["ready_s"]), "< 3", lambda v: v < 3),
    ]
    lines = ["## Targets", "", "| target | this run | goal | met |", "|---|---|---|---|"]
    for name, value, goal, met in rows:
        lines.append(f"| {name} | {value:.3f} | {goal} | {'yes' if met(value) else '**no**'} |")
    return [*lines, "", "Why a missed target is missed: docs/performance.md.", ""]


def retrieval_lines(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = [
        "## Retrieval vs numpy brute force",
        "",
        "Hybrid search (in-memory int8 KNN + FTS5 BM25 + fusion + chunk fetch) vs `vectors @ q` "
        "and `argpartition` over the same float32 vectors in memory; 384 dimensions, top 4.",
        "",
        "| chunks | ours p50 / p95 ms | numpy p50 / p95 ms | ratio p50 / p95 |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['chunks']:,} | {_fmt(row['ours'])} | {_fmt(row['numpy'])} | "
            f"{row['p50_ratio']:.2f} / {row['p95_ratio']:.2f} |"
        )
    return [*lines, "", "Target: retrieval p95 within 2x of numpy at 100k chunks.", ""]


def header(load: tuple[float, float, float]) -> list[str]:
    cpu = platform.processor() or platform.machine()
    return [
        "# edge-gateway benchmark",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {cpu}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; load average at the start "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min: other processes on a "
        "shared machine make absolute numbers noisy; ratios are from the same run). "
        "Reproduce: `make bench`.",
        "",
    ]


def main() -> None:
    # The worker runs llama.cpp with OMP_WAIT_POLICY=PASSIVE (gateway/worker/process.py); the
    # baselines must too. libgomp reads it when loaded, so `make bench` sets it before Python.
    if os.environ.get("OMP_WAIT_POLICY") != "PASSIVE":
        raise SystemExit("run with OMP_WAIT_POLICY=PASSIVE (make bench does)")
    configure_logging("warning", "console")
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench-report"))
    parser.add_argument("--questions", type=int, default=24, help="per concurrency level")
    parser.add_argument("--levels", default="1,4,16", help="concurrent terminals, comma-separated")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--stream-questions", type=int, default=10)
    parser.add_argument("--cache-questions", type=int, default=10)
    parser.add_argument("--nats-questions", type=int, default=10)
    parser.add_argument("--concurrency-prompts", type=int, default=16)
    parser.add_argument("--retrieval-queries", type=int, default=100)
    parser.add_argument("--skip-retrieval", action="store_true", help="skip the 100k-chunk part")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--flood-questions", type=int, default=10)
    parser.add_argument("--skip-diagnosis", action="store_true")
    parser.add_argument(
        "--only-diagnosis", action="store_true", help="run only the device-event benchmark"
    )
    parser.add_argument("--skip-conversations", action="store_true")
    parser.add_argument(
        "--only-conversations", action="store_true", help="run only the follow-up benchmark"
    )
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument(
        "--only-quality", action="store_true", help="run only the answer-quality benchmark"
    )
    args = parser.parse_args()
    levels = tuple(int(x) for x in args.levels.split(",") if x.strip())
    args.out.mkdir(parents=True, exist_ok=True)
    cache = Path.home() / ".cache" / "edge-gateway" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    conversations_text = ""
    if not args.skip_conversations:
        e2e.progress("conversations: follow-ups with and without their context")
        with tempfile.TemporaryDirectory() as tmp:
            conv = conversations.run(Path(tmp), cache)
        conversations_text = "\n".join(conversations.report_lines(conv))
    if args.only_conversations:
        text = "\n".join([*header(load), conversations_text])
        (args.out / "report-conversations.md").write_text(text)
        print(text)
        return
    quality_text = ""
    if not args.skip_quality:
        e2e.progress("answer quality: every mode on two document sets")
        with tempfile.TemporaryDirectory() as tmp:
            quality_result = quality.run(Path(tmp), cache)
        quality_text = "\n".join(
            quality.report_lines(quality_result, default_mode=Settings().answer.mode)
        )
    if args.only_quality:
        text = "\n".join([*header(load), quality_text])
        (args.out / "report-quality.md").write_text(text)
        print(text)
        return
    diag_text = ""
    if not args.skip_diagnosis:
        e2e.progress("device events")
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
        result = e2e.run(
            Path(tmp),
            cache,
            n=args.questions,
            max_tokens=args.max_tokens,
            levels=levels,
            stream_n=args.stream_questions,
            cache_n=args.cache_questions,
            nats_n=args.nats_questions,
        )
        settings = result["settings"]
        model = generation_model_path(settings)
        threads = resolve_threads(settings.worker.n_threads)
        prompts = [result["prompts"][t] for t in result["prompts"]]
        e2e.progress("prefix reuse on vs off")
        pre = prefix.run(
            prompts,
            model=model,
            embedding_model=resolve_embedding_model(settings.kb, settings.cache_dir),
            n_ctx=max(e2e.BASELINE_N_CTX, settings.worker.n_ctx),
            n_threads=threads,
            flash_attn=settings.worker.flash_attn,
        )
        e2e.progress("workers x threads")
        conc = concurrency.run(
            Path(tmp),
            result["formatted_prompts"][: args.concurrency_prompts],
            model=model,
            n_ctx=max(e2e.BASELINE_N_CTX, settings.worker.n_ctx),
            flash_attn=settings.worker.flash_attn,
            max_tokens=args.max_tokens,
            cores=threads,
        )
    e2e.progress("footprint")
    foot = footprint.run()
    retrieval_rows = [] if args.skip_retrieval else retrieval.run(queries=args.retrieval_queries)
    charts.write(args.out, result, pre)
    text = "\n".join(
        [
            *header(load),
            *target_lines(result),
            *e2e_lines(result),
            *prefix.report_lines(pre),
            *concurrency.report_lines(conc),
            *footprint.report_lines(foot, result),
            *retrieval_lines(retrieval_rows),
        ]
    )
    text += "\n" + diag_text + "\n" + conversations_text + "\n" + quality_text
    (args.out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
