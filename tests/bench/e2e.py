"""The gateway end to end, and what it is compared with, all in one run on one machine (issue 7).

Gateway side (a real `edge-gateway run` process, real mosquitto and nats-server):
- cold start: process spawn to the `online` status on the bus (READY);
- closed-loop terminals at each concurrency level (1, 4, 16 by default): each terminal asks its
  next question when the previous answer arrived; latency from publish to answer;
- the same questions over NATS request/reply, one at a time;
- streaming: time to the first partial answer and to the final answer;
- footprint: RSS/PSS/USS of the gateway process and of its worker;
- a second gateway with the answer cache on: each question, then the same question again.
Baselines (same model file, threads, flash attention, max_tokens, greedy decoding, the same
prompts the gateway built, an n_ctx of at least BASELINE_N_CTX): llama-cpp-python in-process,
and llama-cpp-python's OpenAI server behind an MQTT bridge (tests/bench/bridge.py) on the same
broker. Sides run one after the other, never at the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import nats
import psutil

from gateway.cli.ask import NO_DELAY
from gateway.config import Settings, load_settings, merge_overrides
from gateway.questions.prompt import ContextChunk, build_messages
from gateway.rag.embedder import LlamaEmbedder
from gateway.rag.ingest import ingest_paths
from gateway.rag.opening import generation_model_path, open_knowledge_base
from gateway.worker.engine import resolve_threads
from tests.bench.stats import Summary, ratio
from tests.brokers import Mosquitto, NatsServer, free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
DEMO_KB = REPO / "configs" / "demo-kb"
Messages = list[dict[str, str]]


def progress(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


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
    workdir: Path,
    cache: Path,
    port: int,
    max_tokens: int,
    nats_url: str | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[Settings, list[str]]:
    overrides = [
        f"data_dir={workdir / 'data'}",
        f"cache_dir={cache}",
        f"mqtt.port={port}",
        "worker.temperature=0",
        f"worker.max_tokens={max_tokens}",
        # The baselines generate, so the gateway does too: `checked`, the mode that runs the
        # model (the default, extractive, runs none; the quality section compares the modes).
        "answer.mode=checked",
        "log.format=json",
        "queue.max_depth=1000",
        *(["nats.enabled=true", f"nats.servers={nats_url}"] if nats_url else []),
        *extra,
    ]
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


# ---- terminals ------------------------------------------------------------------------------


@dataclass
class Run:
    """One closed-loop run: per-question seconds and replies (in question order), wall time."""

    latencies: list[float]
    replies: list[dict[str, Any]]
    wall_s: float

    @property
    def per_min(self) -> float:
        return len(self.latencies) / self.wall_s * 60 if self.wall_s else 0.0


async def ask_concurrent(
    port: int, texts: list[str], k: int, *, prefix: str, root: str = "edge", timeout_s: float = 600
) -> Run:
    """`k` terminals, each asking its next question once its previous answer arrived."""
    latencies: list[float] = [0.0] * len(texts)
    replies: list[dict[str, Any]] = [{}] * len(texts)
    todo = list(enumerate(texts))

    async def one_terminal(tid: str) -> None:
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=f"{prefix}-{tid}", socket_options=NO_DELAY
        ) as client:
            await client.subscribe(f"{root}/plant1/terminal/{tid}/answer", qos=1)
            messages = client.messages
            while todo:
                i, text = todo.pop(0)
                qid = f"{prefix}-{i}"
                t0 = time.perf_counter()
                await client.publish(
                    f"{root}/plant1/terminal/{tid}/question",
                    json.dumps({"id": qid, "text": text}),
                    qos=1,
                )
                async with asyncio.timeout(timeout_s):
                    async for message in messages:
                        reply = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                        if reply.get("question_id") == qid:
                            latencies[i] = time.perf_counter() - t0
                            replies[i] = reply
                            break

    t0 = time.perf_counter()
    await asyncio.gather(*(one_terminal(f"{prefix}{n}") for n in range(k)))
    return Run(latencies, replies, time.perf_counter() - t0)


async def _ask_all(
    port: int, texts: list[str], timeout_s: float, prefix: str = "bench"
) -> list[tuple[float, dict[str, Any]]]:
    """One terminal, one question at a time (also used by the diagnosis benchmark)."""
    run = await ask_concurrent(port, texts, 1, prefix=prefix, timeout_s=timeout_s)
    return list(zip(run.latencies, run.replies, strict=True))


async def ask_streaming(
    port: int, texts: list[str], *, prefix: str, timeout_s: float = 600
) -> list[tuple[float, float, int]]:
    """(first partial s, final answer s, partials) per question, asked with `stream: true`."""
    out: list[tuple[float, float, int]] = []
    tid = f"{prefix}-t"
    base = f"edge/plant1/terminal/{tid}"
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=f"{prefix}-stream", socket_options=NO_DELAY
    ) as client:
        await client.subscribe(base + "/answer/#", qos=1)
        messages = client.messages
        for i, text in enumerate(texts):
            qid = f"{prefix}-{i}"
            t0 = time.perf_counter()
            first: float | None = None
            pieces = 0
            await client.publish(
                base + "/question", json.dumps({"id": qid, "text": text, "stream": True}), qos=1
            )
            async with asyncio.timeout(timeout_s):
                async for message in messages:
                    reply = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                    if reply.get("question_id") != qid:
                        continue
                    now = time.perf_counter() - t0
                    if reply.get("kind") == "partial":
                        pieces += 1
                        first = now if first is None else first
                        continue
                    out.append((first if first is not None else now, now, pieces))
                    break
    return out


async def _ask_all_nats(
    url: str, texts: list[str], timeout_s: float
) -> list[tuple[float, dict[str, Any]]]:
    """The same questions as NATS core requests (the reply comes on the request's inbox)."""
    results: list[tuple[float, dict[str, Any]]] = []
    nc = await nats.connect(url, inbox_prefix="_INBOX.bench")  # the terminal's own inboxes
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
    async with (
        aiomqtt.Client("127.0.0.1", port, socket_options=NO_DELAY) as client,
        asyncio.timeout(timeout_s),
    ):
        await client.subscribe("edge/plant1/gateway/gw1/status", qos=1)
        async for message in client.messages:
            if json.loads(bytes(message.payload)).get("state") == "online":  # type: ignore[arg-type]
                return


# ---- the gateway process --------------------------------------------------------------------


@dataclass
class Memory:
    rss: int
    pss: int
    uss: int

    @classmethod
    def of(cls, pid: int) -> Memory:
        info = psutil.Process(pid).memory_full_info()
        return cls(int(info.rss), int(info.pss), int(info.uss))


@dataclass
class GatewayProcess:
    """`edge-gateway run` as an operator starts it; `ready_s` is spawn to `online` on the bus."""

    argv: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    ready_s: float = 0.0
    samples: list[tuple[Memory, Memory]] = field(default_factory=list)

    def start(self) -> None:
        asyncio.run(self._start())

    async def _start(self) -> None:
        async with (
            aiomqtt.Client("127.0.0.1", self.port, socket_options=NO_DELAY) as client,
            asyncio.timeout(180),
        ):
            await client.subscribe("edge/plant1/gateway/gw1/status", qos=1)
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - spawning does not block
                [*self.argv, "run"],
                stdout=self.log.open("ab"),
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
            async for message in client.messages:
                state = json.loads(bytes(message.payload)).get("state")  # type: ignore[arg-type]
                if not message.retain and state == "online":
                    self.ready_s = time.perf_counter() - t0
                    return

    def sample_memory(self) -> None:
        assert self.proc is not None
        children = psutil.Process(self.proc.pid).children()
        worker = Memory.of(children[0].pid) if children else Memory(0, 0, 0)
        self.samples.append((Memory.of(self.proc.pid), worker))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


@contextlib.contextmanager
def gateway_process(
    settings_overrides: list[str], port: int, log: Path
) -> Iterator[GatewayProcess]:
    argv = [sys.executable, "-m", "gateway.cli"]
    for item in settings_overrides:
        argv += ["--set", item]
    gw = GatewayProcess(argv, port, log)
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


# ---- baselines ------------------------------------------------------------------------------


def prompts_from_replies(
    settings: Settings, texts: list[str], replies: list[dict[str, Any]]
) -> dict[str, Messages]:
    """The chat messages the gateway built for each question (same chunks, same order)."""
    kb, embedding_model = open_knowledge_base(settings)
    by_id: dict[int, Any] = {}
    with LlamaEmbedder(embedding_model, n_threads=1) as embedder:
        for text in texts:
            (vector,) = embedder.embed([text])
            for hit in kb.search(text, vector, top_k=settings.kb.top_k):
                by_id[hit.chunk_id] = hit
    kb.close()
    prompts = {}
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
        prompts[text] = build_messages(text, chunks)
    return prompts


BASELINE_N_CTX = 2048
"""The baselines put whole chunks in the prompt (~1,250 tokens), as a deployment without a
prompt budget does, so they get the context window such a deployment needs (the gateway's own
`worker.n_ctx` is sized to its budgeted prompts)."""


def load_llama(settings: Settings) -> Any:
    import llama_cpp

    from gateway.llama_backends import ensure_cpu_backend

    ensure_cpu_backend()  # the portable wheel loads its CPU backend at run time
    threads = resolve_threads(settings.worker.n_threads)
    return llama_cpp.Llama(
        model_path=str(generation_model_path(settings)),
        n_ctx=max(BASELINE_N_CTX, settings.worker.n_ctx),
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=settings.worker.flash_attn,
        verbose=False,
    )


def prompt_texts(llm: Any, prompts: dict[str, Messages], texts: list[str]) -> list[str]:
    """The GGUF's own chat template, rendered by llama-cpp-python's public formatter: the same
    prompt text the worker builds (create_chat_completion may substitute a built-in format)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm._model.token_get_text(llm.token_eos()),
        bos_token=llm._model.token_get_text(llm.token_bos()),
    )
    return [formatter(messages=prompts[t]).prompt for t in texts]


def inprocess_baseline(llm: Any, prompts: list[str], k: int, max_tokens: int) -> tuple[Run, int]:
    """`k` threads sharing one Llama behind a lock (it is not thread-safe), closed loop."""
    latencies = [0.0] * len(prompts)
    tokens = [0] * len(prompts)
    todo = list(enumerate(prompts))
    lock = threading.Lock()
    take = threading.Lock()

    def client() -> None:
        while True:
            with take:
                if not todo:
                    return
                i, prompt = todo.pop(0)
            t0 = time.perf_counter()
            with lock:
                out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0)
            latencies[i] = time.perf_counter() - t0
            tokens[i] = int(out["usage"]["completion_tokens"])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Run(latencies, [{} for _ in prompts], time.perf_counter() - t0), sum(tokens)


@contextlib.contextmanager
def openai_server_with_bridge(
    settings: Settings, workdir: Path, mqtt_port: int, prompts: dict[str, Messages]
) -> Iterator[int]:
    """llama_cpp.server + tests/bench/bridge.py; yields the server's pid."""
    port = free_port()
    threads = str(resolve_threads(settings.worker.n_threads))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    log = (workdir / "openai-server.log").open("ab")
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            # llama-cpp-python's own server, after loading the portable wheel's CPU backend
            # (gateway/llama_backends.py), which the server does not do itself.
            "import runpy, sys; from gateway.llama_backends import ensure_cpu_backend; "
            "ensure_cpu_backend(); sys.argv[0] = 'llama_cpp.server'; "
            "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)",
            "--model",
            str(generation_model_path(settings)),
            "--n_ctx",
            str(max(BASELINE_N_CTX, settings.worker.n_ctx)),
            "--n_threads",
            threads,
            "--n_threads_batch",
            threads,
            "--flash_attn",
            str(settings.worker.flash_attn),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    table = workdir / "bridge-prompts.json"
    table.write_text(json.dumps(prompts))
    bridge: subprocess.Popen[bytes] | None = None
    try:
        wait_for_port(port, timeout_s=120)
        bridge = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.bench.bridge",
                "--mqtt-port",
                str(mqtt_port),
                "--server",
                f"http://127.0.0.1:{port}",
                "--prompts",
                str(table),
                "--max-tokens",
                str(settings.worker.max_tokens),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        time.sleep(1.0)  # let the bridge subscribe
        yield server.pid
    finally:
        for proc in (bridge, server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# ---- the whole comparison -------------------------------------------------------------------


def model_answered(replies: list[dict[str, Any]]) -> list[int]:
    return [
        i
        for i, r in enumerate(replies)
        if r.get("kind") == "answer" and not r["fallback"] and not r.get("cached")
    ]


def run(
    workdir: Path,
    cache: Path,
    *,
    n: int = 24,
    max_tokens: int = 128,
    levels: tuple[int, ...] = (1, 4, 16),
    stream_n: int = 10,
    cache_n: int = 10,
    nats_n: int = 10,
) -> dict[str, Any]:
    texts = questions(n)
    result: dict[str, Any] = {"questions": n, "levels": levels, "max_tokens": max_tokens}
    with Mosquitto(workdir / "mosquitto") as broker, NatsServer(workdir / "nats") as nats_server:
        settings, overrides = settings_for(
            workdir,
            cache,
            broker.port,
            max_tokens,
            nats_server.url,
            ("answer_cache.enabled=false",),
        )
        ingest_demo(settings)
        result["threads"] = resolve_threads(settings.worker.n_threads)
        log = workdir / "gateway.log"
        with gateway_process(overrides, broker.port, log) as gw:
            result["ready_s"] = [gw.ready_s]
            progress(f"gateway ready in {gw.ready_s:.2f} s")
            asyncio.run(ask_concurrent(broker.port, ["What does alarm E203 mean?"], 1, prefix="w"))
            gw.sample_memory()
            progress("gateway, 1 terminal")
            first = asyncio.run(ask_concurrent(broker.port, texts, 1, prefix="c1"))
            keep = model_answered(first.replies)
            kept = [texts[i] for i in keep]
            result["answered_by_model"] = len(keep)
            result["fallbacks"] = sum(1 for r in first.replies if r.get("fallback"))
            result["errors"] = sum(1 for r in first.replies if r.get("kind") == "error")
            # One terminal: the screening run itself (fallbacks take milliseconds; a closed
            # loop of one terminal spends its wall time in its questions).
            one = [first.latencies[i] for i in keep]
            gateway_runs = {1: Run(one, [first.replies[i] for i in keep], sum(one))}
            for k in levels:
                if k == 1:
                    continue
                progress(f"gateway, {k} terminal(s)")
                gateway_runs[k] = asyncio.run(ask_concurrent(broker.port, kept, k, prefix=f"g{k}"))
                gw.sample_memory()
            progress("gateway over NATS")
            nats_results = asyncio.run(_ask_all_nats(nats_server.url, kept[:nats_n], 600))
            progress("gateway, streaming")
            stream_texts = kept[:stream_n]
            streamed = asyncio.run(ask_streaming(broker.port, stream_texts, prefix="st"))
            plain = asyncio.run(ask_concurrent(broker.port, stream_texts, 1, prefix="ns"))
            gw.sample_memory()
        result["gateway"] = gateway_runs
        result["gateway_tokens"] = {
            k: sum(r.get("usage", {}).get("completion_tokens", 0) for r in run.replies)
            for k, run in gateway_runs.items()
        }
        result["memory"] = gw.samples
        result["nats"] = Summary.of([t for t, _ in nats_results])
        result["mqtt_seq"] = Summary.of(gateway_runs[1].latencies[:nats_n])
        result["stream_first"] = Summary.of([f for f, _, _ in streamed])
        result["stream_final"] = Summary.of([t for _, t, _ in streamed])
        result["stream_pieces"] = sum(p for _, _, p in streamed) / max(1, len(streamed))
        result["plain_final"] = Summary.of(plain.latencies)
        result["raw"] = {
            "stream_first": [f for f, _, _ in streamed],
            "stream_final": [t for _, t, _ in streamed],
        }

        # The answer cache: a second gateway with it on; each question, then again.
        cache_texts = kept[:cache_n]
        cached_overrides = [o for o in overrides if not o.startswith("answer_cache")]
        with gateway_process(cached_overrides, broker.port, log) as gw2:
            result["ready_s"].append(gw2.ready_s)
            progress("gateway, answer cache")
            cold = asyncio.run(ask_concurrent(broker.port, cache_texts, 1, prefix="u"))
            warm = asyncio.run(ask_concurrent(broker.port, cache_texts, 1, prefix="h"))
        result["uncached"] = Summary.of(cold.latencies)
        result["cached"] = Summary.of(warm.latencies)
        result["cache_hits"] = sum(1 for r in warm.replies if r.get("cached"))
        result["raw"]["uncached"] = cold.latencies
        result["raw"]["cached"] = warm.latencies

        # Baselines on the prompts the gateway built.
        prompts = prompts_from_replies(settings, kept, [first.replies[i] for i in keep])
        result["prompts"] = prompts
        progress("llama-cpp-python in-process")
        llm = load_llama(settings)
        formatted = prompt_texts(llm, prompts, kept)
        llm.create_completion("warm up", max_tokens=8, temperature=0)
        inproc: dict[int, Run] = {}
        inproc_tokens: dict[int, int] = {}
        for k in levels:
            inproc[k], inproc_tokens[k] = inprocess_baseline(llm, formatted, k, max_tokens)
        llm.close()
        del llm
        result["inprocess"] = inproc
        result["inprocess_tokens"] = inproc_tokens
        result["formatted_prompts"] = formatted

        progress("llama-cpp-python OpenAI server + MQTT bridge")
        with openai_server_with_bridge(settings, workdir, broker.port, prompts) as server_pid:
            asyncio.run(ask_concurrent(broker.port, kept[:1], 1, prefix="bw", root="bridge"))
            server_runs: dict[int, Run] = {}
            for k in levels:
                server_runs[k] = asyncio.run(
                    ask_concurrent(broker.port, kept, k, prefix=f"b{k}", root="bridge")
                )
            result["server_memory"] = Memory.of(server_pid)
        result["server"] = server_runs
    result["settings"] = settings
    return result


def ratios(ours: Run, base: Run) -> tuple[float, float, float]:
    """(p50 ratio, p95 ratio, answers/min ratio) of ours / baseline."""
    a, b = Summary.of(ours.latencies), Summary.of(base.latencies)
    return ratio(a.p50_ms, b.p50_ms), ratio(a.p95_ms, b.p95_ms), ratio(ours.per_min, base.per_min)
