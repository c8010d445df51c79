"""PNG charts of the latency distributions behind the report (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _box(ax: Any, data: list[list[float]], labels: list[str], title: str, log: bool) -> None:
    ax.boxplot([[v * 1000 for v in d] for d in data], showfliers=True, whis=(5, 95))
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_title(title)
    ax.set_ylabel("ms (whiskers p5-p95)")
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)


def write(out: Path, e2e: dict[str, Any], prefix: dict[str, Any]) -> list[Path]:
    plt = _plt()
    written = []
    levels = e2e["levels"]
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 4.2))
    for ax, k in zip(axes if len(levels) > 1 else [axes], levels, strict=True):
        _box(
            ax,
            [
                e2e["gateway"][k].latencies,
                e2e["inprocess"][k].latencies,
                e2e["server"][k].latencies,
            ],
            ["gateway\n(MQTT)", "llama-cpp\nin-process", "OpenAI server\n+ bridge"],
            f"{k} concurrent terminal{'s' if k > 1 else ''}",
            log=False,
        )
    fig.suptitle("Answer latency, same questions, model and settings")
    fig.tight_layout()
    written.append(out / "e2e-latency.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    raw = e2e["raw"]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 4.2))
    _box(
        a,
        [raw["stream_first"], raw["stream_final"]],
        ["first partial", "final answer"],
        "Streaming: first words vs complete",
        log=False,
    )
    _box(
        b,
        [raw["uncached"], raw["cached"]],
        ["uncached", "cached"],
        "Answer cache (log scale)",
        log=True,
    )
    _box(
        c,
        [prefix["off_raw"], prefix["on_raw"]],
        ["prefix reuse off", "on"],
        "Prompt processing",
        log=False,
    )
    fig.tight_layout()
    written.append(out / "stream-cache-prefix.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written
