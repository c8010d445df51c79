"""Gateway over MQTT vs the same prompts sent to llama-cpp-python in-process (issue 2, bench a),
and the same questions over NATS request/reply to the same gateway (issue 3): p50/p95 per bus.

Both sides use the same model file, context size, threads, flash attention, max tokens and
greedy decoding (temperature 0), so they generate the same answers. The gateway side is measured
from the terminal's publish to the answer's arrival (bus, journal, retrieval, worker, outbox);
the baseline is `create_chat_completion` alone on the prompt the gateway would have built.
They run one after the other, never at the same time, on the same machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import nats

from gateway.app import generation_model_path, open_knowledge_base
from gateway.config import Settings
from gateway.prompt import ContextChunk, build_messages
from gateway.rag.embedder import LlamaEmbedder
from gateway.rag.ingest import ingest_paths
from gateway.worker.engine import resolve_threads
from tests.bench.stats import Summary, ratio
from tests.brokers import Mosquitto, NatsServer

REPO = Path(__file__).resolve().parents[2]
DEMO_KB = REPO / "configs" / "demo-kb"


def questions(n: int) -> list[str]:
    lines = (DEMO_KB / "calibration-questions.txt").read_text().splitlines()
    base = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    out = []
    while len(out) < n:
        for q in base:
            out.append(q if len(out) < len(base) else f"Please answer briefly: {q}")
            if len(out) == n:
                break
    return out


def settings_for(
    workdir: Path, cache: Path, port: int, max_tokens: int, nats_url: str | None = None
) -> tuple[Settings, list[str]]:
    """Bench settings; NATS is enabled beside MQTT only when a server URL is given."""
    nats = ["nats.enabled=true", f"nats.servers={nats_url}"] if nats_url else []
    overrides = [
        f"data_dir={workdir / 'data'}",
        f"cache_dir={cache}",
        f"mqtt.port={port}",
        *nats,
        "worker.temperature=0",
        f"worker.max_tokens={max_tokens}",
        "log.format=json",
        "queue.max_depth=1000",
    ]
    from gateway.config import load_settings, merge_overrides

    return load_settings(None, merge_overrides(overrides)), overrides


def ingest_demo(settings: Settings) -> None:
    kb, embedding_model = open_knowledge_base(settings)
    with LlamaEmbedder(embedding_model, n_threads=1) as embedder:
        ingest_paths(
            kb,
            embedder,
            [DEMO_KB],
            chunk_chars=settings.kb.chunk_chars,
            overlap=settings.kb.chunk_overlap_chars,
            progress=False,
        )
    kb.close()


async def _ask_all(
    port: int, texts: list[str], timeout_s: float, *, prefix: str = "bench"
) -> list[tuple[float, dict[str, Any]]]:
    results: list[tuple[float, dict[str, Any]]] = []
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-terminal") as client:
        answer_topic = "edge/plant1/terminal/bench/answer"
        await client.subscribe(answer_topic, qos=1)
        messages = client.messages
        for i, text in enumerate(texts):
            qid = f"{prefix}-{i}"
            t0 = time.perf_counter()
            await client.publish(
                "edge/plant1/terminal/bench/question",
                json.dumps({"id": qid, "text": text}),
                qos=1,
            )
            async with asyncio.timeout(timeout_s):
                async for message in messages:
                    reply = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    if reply.get("question_id") == qid:
                        results.append((time.perf_counter() - t0, reply))
                        break
    return results


async def _ask_all_nats(
    url: str, texts: list[str], timeout_s: float
) -> list[tuple[float, dict[str, Any]]]:
    """The same questions as NATS core requests (the reply comes on the request's inbox)."""
    results: list[tuple[float, dict[str, Any]]] = []
    nc = await nats.connect(url)
    try:
        for i, text in enumerate(texts):
            qid = f"nats-bench-{i}"
            t0 = time.perf_counter()
            msg = await nc.request(
                "edge.plant1.question.bench",
                json.dumps({"id": qid, "text": text}).encode(),
                timeout=timeout_s,
            )
            results.append((time.perf_counter() - t0, json.loads(msg.data)))
    finally:
        await nc.close()
    return results


async def _wait_online(port: int, timeout_s: float) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client, asyncio.timeout(timeout_s):
        await client.subscribe("edge/plant1/gateway/gw1/status", qos=1)
        async for message in client.messages:
            if json.loads(bytes(message.payload)).get("state") == "online":  # type: ignore[arg-type]
                return


def run_gateway_side(
    workdir: Path, cache: Path, texts: list[str], max_tokens: int
) -> tuple[list[float], list[dict[str, Any]], list[float], list[dict[str, Any]], Settings]:
    with Mosquitto(workdir / "mosquitto") as broker, NatsServer(workdir / "nats") as nats_server:
        settings, overrides = settings_for(workdir, cache, broker.port, max_tokens, nats_server.url)
        ingest_demo(settings)
        argv = [sys.executable, "-m", "gateway.cli"]
        for item in overrides:
            argv += ["--set", item]
        log = (workdir / "gateway.log").open("wb")
        proc = subprocess.Popen([*argv, "run"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            asyncio.run(_wait_online(broker.port, 120))
            # Warm-up question (model pages, KV cache), not counted.
            # Its own id: reusing bench-0 made the first measured question a journal replay.
            asyncio.run(_ask_all(broker.port, ["What does alarm E203 mean?"], 120, prefix="warmup"))
            results = asyncio.run(_ask_all(broker.port, texts, 120))
            nats_results = asyncio.run(_ask_all_nats(nats_server.url, texts, 120))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    return (
        [t for t, _ in results],
        [reply for _, reply in results],
        [t for t, _ in nats_results],
        [reply for _, reply in nats_results],
        settings,
    )


def run_baseline_side(
    settings: Settings, texts: list[str], replies: list[dict[str, Any]], max_tokens: int
) -> tuple[Summary, list[int]]:
    """llama-cpp-python in-process on the prompts the gateway built (same chunks, same order)."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    kb, embedding_model = open_knowledge_base(settings)
    by_id: dict[int, Any] = {}
    with LlamaEmbedder(embedding_model, n_threads=1) as embedder:
        for text in texts:
            (vector,) = embedder.embed([text])
            for hit in kb.search(text, vector, top_k=settings.kb.top_k):
                by_id[hit.chunk_id] = hit
    kb.close()
    threads = resolve_threads(settings.worker.n_threads)
    llm = llama_cpp.Llama(
        model_path=str(generation_model_path(settings)),
        n_ctx=settings.worker.n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=settings.worker.flash_attn,
        verbose=False,
    )
    # The GGUF's own chat template, rendered by llama-cpp-python's public formatter: the same
    # prompt text the worker builds (create_chat_completion may substitute a built-in format).
    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm._model.token_get_text(llm.token_eos()),
        bos_token=llm._model.token_get_text(llm.token_bos()),
    )
    llm.create_completion("warm up", max_tokens=8, temperature=0)
    times, tokens = [], []
    for text, reply in zip(texts, replies, strict=True):
        chunks = [
            ContextChunk(
                n,
                by_id[s["chunk_id"]].document,
                by_id[s["chunk_id"]].section,
                by_id[s["chunk_id"]].page,
                by_id[s["chunk_id"]].text,
            )
            for n, s in enumerate(reply.get("sources", []), 1)
            if s["chunk_id"] in by_id
        ]
        prompt = formatter(messages=build_messages(text, chunks)).prompt
        t0 = time.perf_counter()
        out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0)
        times.append(time.perf_counter() - t0)
        tokens.append(int(out["usage"]["completion_tokens"]))
    return Summary.of(times), tokens


def run(workdir: Path, cache: Path, n: int = 50, max_tokens: int = 128) -> dict[str, Any]:
    texts = questions(n)
    times, replies, nats_times, nats_replies, settings = run_gateway_side(
        workdir, cache, texts, max_tokens
    )
    # Only questions the model answered are compared: a fallback never calls the model.
    keep = [i for i, r in enumerate(replies) if r.get("kind") == "answer" and not r["fallback"]]
    gw = Summary.of([times[i] for i in keep])
    # Per bus: the questions both buses got a model answer for (same questions, same model).
    both = [
        i
        for i in keep
        if nats_replies[i].get("kind") == "answer" and not nats_replies[i]["fallback"]
    ]
    mqtt_bus = Summary.of([times[i] for i in both])
    nats_bus = Summary.of([nats_times[i] for i in both])
    base, base_tokens = run_baseline_side(
        settings, [texts[i] for i in keep], [replies[i] for i in keep], max_tokens
    )
    fallbacks = sum(1 for r in replies if r.get("fallback"))
    errors = sum(1 for r in replies if r.get("kind") == "error")
    replies = [replies[i] for i in keep]
    return {
        "questions": n,
        "answered_by_model": len(keep),
        "fallbacks": fallbacks,
        "errors": errors,
        "gateway": gw,
        "baseline": base,
        "mqtt_bus": mqtt_bus,
        "nats_bus": nats_bus,
        "nats_mqtt_p50_ratio": ratio(nats_bus.p50_ms, mqtt_bus.p50_ms),
        "nats_mqtt_p95_ratio": ratio(nats_bus.p95_ms, mqtt_bus.p95_ms),
        "p50_ratio": ratio(gw.p50_ms, base.p50_ms),
        "p95_ratio": ratio(gw.p95_ms, base.p95_ms),
        "gateway_completion_tokens": sum(
            r.get("usage", {}).get("completion_tokens", 0) for r in replies
        ),
        "baseline_completion_tokens": sum(base_tokens),
        "threads": resolve_threads(settings.worker.n_threads),
        "cpu_count": os.cpu_count(),
    }
