"""Issue 4 benchmarks: alarm ingest rate while coalescing, and question latency during a flood.

(a) Ingest: N device events published as fast as one QoS 1 client can, counted by a bare paho
    subscriber (baseline, gateway not running) and then by the gateway (its health counter
    `diagnosis.events_received`, published every 0.25 s). Undocumented codes, so the model is
    not involved: this measures bus + parse + validation + coalescing. Ratio gateway / bare.
(b) Question latency p95 with no events vs during a flood (1,000 events/s, 5 devices x 3 codes,
    one of them documented so the worker also runs diagnoses). Ratio flood / idle; target <= 1.2.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.bench.e2e import REPO, _ask_all, _wait_online, ingest_demo, questions, settings_for
from tests.bench.stats import Summary, ratio
from tests.brokers import Mosquitto
from tests.devices import event, event_topic, publish_paced

CODES = {"X901": "critical", "X902": "warning", "X903": "info"}


def _events(n: int, codes: dict[str, str]) -> list[tuple[str, bytes]]:
    names = list(codes)
    return [
        (
            event_topic(f"M{i % 5}"),
            event("alarm_raised", names[(i // 5) % 3], codes[names[(i // 5) % 3]]),
        )
        for i in range(n)
    ]


def bare_subscriber_rate(port: int, messages: list[tuple[str, bytes]]) -> float:
    """Events/s a plain paho subscriber (QoS 1, auto ack) receives the same stream at."""
    done = threading.Event()
    count = 0

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        nonlocal count
        count += 1
        if count >= len(messages):
            done.set()

    sub = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bare-{secrets.token_hex(3)}",
        protocol=paho.MQTTv5,
    )
    sub.on_message = on_message
    sub.connect("127.0.0.1", port)
    sub.subscribe("edge/plant1/device/+/event", qos=1)
    sub.loop_start()
    time.sleep(0.5)
    try:
        started = time.monotonic()
        publish_paced(port, messages, 0)
        done.wait(120)
        return count / (time.monotonic() - started)
    finally:
        sub.disconnect()
        sub.loop_stop()


async def _gateway_events(port: int, at_least: int, timeout_s: float) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client, asyncio.timeout(timeout_s):
        await client.subscribe("edge/plant1/gateway/gw1/health", qos=0)
        async for message in client.messages:
            health = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            if health["diagnosis"]["events_received"] >= at_least:
                return


def gateway_rate(port: int, messages: list[tuple[str, bytes]], already: int) -> float:
    started = time.monotonic()
    publisher = threading.Thread(target=publish_paced, args=(port, messages, 0))
    publisher.start()
    asyncio.run(_gateway_events(port, already + len(messages), 300))
    elapsed = time.monotonic() - started
    publisher.join()
    return len(messages) / elapsed


def _progress(text: str) -> None:
    print(f"bench.diagnosis: {text}", file=sys.stderr, flush=True)


ROUTINE_FLOOD = {"E203": "warning", "X902": "warning", "X903": "info"}
CRITICAL_FLOOD = {"E203": "warning", "X901": "critical", "X902": "warning"}


def flood_and_ask(
    port: int, texts: list[str], codes: dict[str, str], prefix: str
) -> list[tuple[float, dict[str, Any]]]:
    """Ask `texts` one at a time while a thread publishes 1,000 events/s of `codes`."""
    flood = _events(1_000 * 120, codes)  # up to 2 minutes at 1,000/s
    stop = threading.Event()

    def publish_until_stopped() -> None:
        for start in range(0, len(flood), 1_000):
            if stop.is_set():
                return
            publish_paced(port, flood[start : start + 1_000], 1.0)

    flooder = threading.Thread(target=publish_until_stopped)
    flooder.start()
    time.sleep(2)
    try:
        return asyncio.run(_ask_all(port, texts, 300, prefix=prefix))
    finally:
        stop.set()
        flooder.join()


def run(
    workdir: Path, cache: Path, *, events: int = 5_000, n_questions: int = 5, max_tokens: int = 48
) -> dict[str, Any]:
    with Mosquitto(workdir / "mosquitto") as broker:
        settings, overrides = settings_for(workdir, cache, broker.port, max_tokens)
        overrides += [
            "health.interval_s=0.25",
            "log.level=warning",
            "diagnosis.coalesce_window_s=2",
            "answer_cache.enabled=false",  # the flood run repeats the idle run's questions
        ]
        ingest_demo(settings)
        stream = _events(events, CODES)
        bare = bare_subscriber_rate(broker.port, stream)
        _progress(f"bare subscriber: {bare:,.0f} events/s")
        argv = [sys.executable, "-m", "gateway.cli"]
        for item in overrides:
            argv += ["--set", item]
        log = (workdir / "gateway-diagnosis.log").open("wb")
        proc = subprocess.Popen([*argv, "run"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            asyncio.run(_wait_online(broker.port, 120))
            ours = gateway_rate(broker.port, stream, already=0)
            _progress(f"gateway: {ours:,.0f} events/s")
            texts = questions(n_questions)
            asyncio.run(_ask_all(broker.port, ["What does alarm E203 mean?"], 120))  # warm-up
            idle = asyncio.run(_ask_all(broker.port, texts, 300, prefix="idle"))
            _progress("idle questions done; flooding")
            during = flood_and_ask(broker.port, texts, ROUTINE_FLOOD, "flood")
            _progress("routine flood done; flooding with critical alarms")
            critical = flood_and_ask(broker.port, texts, CRITICAL_FLOOD, "critical")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    # Distinct question ids: the same id would be answered from the journal, not the model.
    assert all(r.get("kind") == "answer" for _, r in [*idle, *during, *critical])
    idle_s, flood_s = Summary.of([t for t, _ in idle]), Summary.of([t for t, _ in during])
    critical_s = Summary.of([t for t, _ in critical])
    return {
        "events": events,
        "bare_rate": bare,
        "gateway_rate": ours,
        "ingest_ratio": ours / bare,
        "idle": idle_s,
        "flood": flood_s,
        "p95_ratio": ratio(flood_s.p95_ms, idle_s.p95_ms),
        "critical": critical_s,
        "critical_p95_ratio": ratio(critical_s.p95_ms, idle_s.p95_ms),
        "questions": n_questions,
    }


def report_lines(r: dict[str, Any]) -> list[str]:
    return [
        "## Device events: ingest while coalescing, and questions during an alarm flood",
        "",
        f"{r['events']:,} events (5 devices x 3 undocumented codes, QoS 1, one publisher at full "
        "speed). Baseline: a bare paho subscriber counting the same stream, gateway not running.",
        "",
        "| | events/s |",
        "|---|---|",
        f"| bare subscriber | {r['bare_rate']:,.0f} |",
        f"| gateway (parse, validate, coalesce, count) | {r['gateway_rate']:,.0f} |",
        f"| **ratio gateway / bare** | **{r['ingest_ratio']:.2f}** |",
        "",
        f"{r['questions']} questions one at a time, idle vs during a 1,000 events/s flood of "
        "warnings and infos on 5 devices (E203 and X902 warnings, X903 info), whose routine "
        "diagnoses run on the worker between the questions and give way to them (preemption). "
        "Then the same during a flood that also raises a critical alarm (X901) on the 5 "
        "devices: critical diagnoses are served before questions by design "
        "(gateway/worker/scheduler.py), so that row is reported, not held to the target.",
        "",
        "| | p50 / p95 ms |",
        "|---|---|",
        f"| idle | {r['idle'].p50_ms:.0f} / {r['idle'].p95_ms:.0f} |",
        f"| during the routine flood | {r['flood'].p50_ms:.0f} / {r['flood'].p95_ms:.0f} |",
        f"| **p95 ratio routine flood / idle** | **{r['p95_ratio']:.2f}** (target <= 1.2) |",
        f"| during a flood with critical alarms | {r['critical'].p50_ms:.0f} / "
        f"{r['critical'].p95_ms:.0f} |",
        f"| p95 ratio critical flood / idle | {r['critical_p95_ratio']:.2f} |",
        "",
    ]
