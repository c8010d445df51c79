"""Workers x threads on this box: one llama.cpp process with every core, or one process per core?

The same RAG prompts, greedy, same max_tokens, each configuration alone on the machine:
- `1x{cores}`: one process, n_threads = cores, the prompts one after the other (what the
  gateway does today: one worker, one request at a time);
- `{cores}x1`: `cores` processes with n_threads = 1 each, the prompts split between them and run
  at the same time (what a pool of single-threaded workers would do with a full queue).
Both give throughput (answers/min) with a full queue; the single-request latency of one
1-thread process is what a pool would give a lone terminal. Reported, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.bench.stats import Summary, ratio

REPO = Path(__file__).resolve().parents[2]


def _child(spec_path: Path) -> None:
    """Run the prompts of the spec in this process; print one JSON line of timings."""
    import llama_cpp

    from gateway.llama_backends import ensure_cpu_backend

    ensure_cpu_backend()  # the portable wheel loads its CPU backend at run time
    spec = json.loads(spec_path.read_text())
    llm = llama_cpp.Llama(
        model_path=spec["model"],
        n_ctx=spec["n_ctx"],
        n_threads=spec["threads"],
        n_threads_batch=spec["threads"],
        flash_attn=spec["flash_attn"],
        verbose=False,
    )
    llm.create_completion("warm up", max_tokens=4, temperature=0)
    print("ready", flush=True)
    sys.stdin.readline()  # start together with the sibling processes
    times, tokens = [], 0
    for prompt in spec["prompts"]:
        t0 = time.perf_counter()
        out = llm.create_completion(prompt, max_tokens=spec["max_tokens"], temperature=0)
        times.append(time.perf_counter() - t0)
        tokens += int(out["usage"]["completion_tokens"])
    print(json.dumps({"times": times, "tokens": tokens}), flush=True)


def _run(
    workdir: Path, prompts: list[str], *, processes: int, threads: int, common: dict[str, Any]
) -> tuple[float, list[float], int]:
    """(wall seconds, per-prompt seconds, completion tokens) with the prompts dealt out."""
    procs = []
    for i in range(processes):
        spec = workdir / f"concurrency-{processes}x{threads}-{i}.json"
        spec.write_text(
            json.dumps({**common, "threads": threads, "prompts": prompts[i::processes]})
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.bench.concurrency", str(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    t0 = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.perf_counter() - t0
    times = [t for r in results for t in r["times"]]
    return wall, times, sum(r["tokens"] for r in results)


def run(
    workdir: Path,
    prompts: list[str],
    *,
    model: Path,
    n_ctx: int,
    flash_attn: bool,
    max_tokens: int,
    cores: int,
) -> dict[str, Any]:
    common = {
        "model": str(model),
        "n_ctx": n_ctx,
        "flash_attn": flash_attn,
        "max_tokens": max_tokens,
    }
    wall_1, times_1, tokens_1 = _run(workdir, prompts, processes=1, threads=cores, common=common)
    wall_n, times_n, tokens_n = _run(workdir, prompts, processes=cores, threads=1, common=common)
    per_min_1 = len(prompts) / wall_1 * 60
    per_min_n = len(prompts) / wall_n * 60
    return {
        "prompts": len(prompts),
        "cores": cores,
        "one": Summary.of(times_1),
        "many": Summary.of(times_n),
        "one_per_min": per_min_1,
        "many_per_min": per_min_n,
        "one_tokens": tokens_1,
        "many_tokens": tokens_n,
        "throughput_ratio": ratio(per_min_n, per_min_1),
        "latency_ratio": ratio(Summary.of(times_n).p50_ms, Summary.of(times_1).p50_ms),
    }


def report_lines(r: dict[str, Any]) -> list[str]:
    c = r["cores"]
    return [
        f"## Workers x threads: 1 x {c} vs {c} x 1",
        "",
        f"{r['prompts']} RAG prompts, greedy; each configuration alone on the machine. "
        f"1 x {c}: one process with {c} threads, prompts one after the other (the gateway "
        f"today). {c} x 1: {c} single-threaded processes splitting the prompts, all busy at once "
        "(a worker pool with a full queue). Per-answer time is model time only (no queueing).",
        "",
        "| configuration | answers/min | per-answer p50 / p95 ms | completion tokens |",
        "|---|---|---|---|",
        f"| 1 x {c} threads | {r['one_per_min']:.1f} | {r['one'].p50_ms:.0f} / "
        f"{r['one'].p95_ms:.0f} | {r['one_tokens']} |",
        f"| {c} x 1 thread | {r['many_per_min']:.1f} | {r['many'].p50_ms:.0f} / "
        f"{r['many'].p95_ms:.0f} | {r['many_tokens']} |",
        f"| **ratio {c}x1 / 1x{c}** | **{r['throughput_ratio']:.2f}** | "
        f"**{r['latency_ratio']:.2f}** (p50) | |",
        "",
    ]


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
