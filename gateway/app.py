"""The composition root: builds every part from Settings and runs them under one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from datetime import UTC, datetime
from typing import Any

from adapters.mqtt import MqttAdapter
from adapters.nats import NatsAdapter
from gateway.bus import (
    ROUTE_DEVICE_EVENT,
    ROUTE_DIAGNOSIS_MIRROR,
    ROUTE_PEER,
    ROUTE_QUESTION,
    BusAdapter,
    InboundMessage,
    MessageHandler,
    Subscription,
)
from gateway.config import Settings
from gateway.diagnosis.addresses import DiagnosisAddress, nats_token
from gateway.diagnosis.ownership import Roster
from gateway.diagnosis.pipeline import DiagnosisPolicy
from gateway.diagnosis.service import DiagnosisService
from gateway.executor import SerialExecutor
from gateway.logging import get_logger
from gateway.ops.health import HealthReporter, LoopLagMonitor
from gateway.ops.operations import Operations
from gateway.questions.answer_cache import AnswerCache
from gateway.questions.answering import Answerer, AnswerPolicy
from gateway.questions.conversation import Limits
from gateway.questions.journal import Journal
from gateway.questions.metrics import Metrics
from gateway.questions.service import QuestionService
from gateway.questions.turns import SharedTurns
from gateway.rag.live import LiveKnowledgeBase
from gateway.rag.opening import generation_model_path, open_knowledge_base
from gateway.version import package_version
from gateway.worker.scheduler import PriorityScheduler
from gateway.worker.supervisor import WorkerSupervisor
from models.health import GatewayState, Status

log = get_logger(__name__)

PURGE_INTERVAL_S = 3600.0


def wildcard_subject(template: str) -> str:
    """A NATS filter for every subject a per-device template can produce: the tokens before its
    first placeholder, then `>` (what follows may be one token or, in a custom template, more)."""
    tokens = template.split(".")
    fixed = list(itertools.takewhile(lambda token: "{" not in token, tokens))
    return ".".join([*fixed, ">"]) if len(fixed) < len(tokens) else template


class Gateway:
    """One gateway instance. `run()` returns after `stop` is set and shutdown has finished."""

    def __init__(self, settings: Settings, *, allow_test_ops: bool = False) -> None:
        self.settings = settings
        self.allow_test_ops = allow_test_ops
        self.ready = asyncio.Event()
        self.metrics = Metrics()
        self.service: QuestionService | None = None
        self.diagnosis: DiagnosisService | None = None
        self.worker: WorkerSupervisor | None = None
        self.journal: Journal | None = None
        self.adapters: dict[str, BusAdapter] = {}
        self.answerer: Answerer | None = None
        self.kb: LiveKnowledgeBase | None = None
        self.loop_lag = LoopLagMonitor()
        self.started_at = datetime.now(UTC).replace(microsecond=0)
        """`since` of this run's online status (whole seconds: it must survive a round trip
        through JSON unchanged, the diagnosis service recognises its own status by it)."""

    def _status(self, state: GatewayState, since: datetime | None = None) -> bytes:
        return (
            Status(
                instance=self.settings.instance,
                state=state,
                since=since or self.started_at,
                version=package_version(),
            )
            .model_dump_json()
            .encode()
        )

    def state(self) -> GatewayState:
        if self.worker is not None and self.worker.degraded:
            return GatewayState.DEGRADED
        return GatewayState.ONLINE

    async def run(self, stop: asyncio.Event) -> None:
        ops = Operations(self, stop)  # systemd READY/WATCHDOG/STATUS from this loop
        ops.start()
        try:
            await self._run(stop, ops)
        finally:
            await ops.close()

    async def _run(self, stop: asyncio.Event, ops: Operations) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        s.cache_dir.mkdir(parents=True, exist_ok=True)
        journal_io = SerialExecutor("journal")
        kb_io = SerialExecutor("kb")
        started = time.monotonic()
        journal = await journal_io.run(
            Journal,
            s.journal_path,
            synchronous=s.journal.synchronous,
            unnamed_dedup_s=s.journal.unnamed_dedup_s,
        )
        self.journal = journal
        kb_file, embedding_model = await kb_io.run(open_knowledge_base, s)
        chunks = await kb_io.run(kb_file.chunk_count)
        kb = self.kb = LiveKnowledgeBase(kb_file, kb_io, top_k=s.kb.top_k, chunks=chunks)
        if chunks == 0:
            log.warning("kb.empty", path=str(s.kb_path), hint="run `edge-gateway ingest PATH`")
        # Load the in-memory vector index before the first question (~1 s at 100k chunks).
        await kb_io.run(kb_file.warm)
        worker = WorkerSupervisor(
            s.worker,
            generation_model=generation_model_path(s),
            embedding_model=embedding_model,
            instance=s.instance,
            allow_test_ops=self.allow_test_ops,
        )
        self.worker = worker
        try:
            await worker.start()

            answerer = self.answerer = Answerer(
                worker,
                kb.search,
                AnswerPolicy.from_settings(s),
                **self._answer_cache(kb),
            )
            scheduler = PriorityScheduler(
                burst=s.queue.priority_burst,
                max_wait_s=s.queue.max_wait_s,
                on_urgent=worker.preempt,
            )
            self._build_adapters()
            service = QuestionService(
                adapters=self.adapters,
                journal=journal,
                journal_io=journal_io,
                answerer=answerer,
                limits=s.limits,
                queue_capacity=s.queue.max_depth,
                metrics=self.metrics,
                scheduler=scheduler,
                streaming_terminals=frozenset(s.streaming.terminals),
                conversation=Limits(
                    max_turns=s.conversation.max_turns,
                    max_bytes=s.conversation.max_bytes,
                    max_age_s=s.conversation.max_age_s,
                ),
                shared_turns=self._shared_turns,
            )
            self.service = service
            routes: dict[str, MessageHandler] = {ROUTE_QUESTION: service.on_message}
            diagnosis = None
            if s.diagnosis.enabled:
                diagnosis = self.diagnosis = self._diagnosis_service(scheduler, worker, kb)
                routes.update(self._diagnosis_routes(diagnosis))
            health = HealthReporter(
                instance=s.instance,
                data_dir=s.data_dir,
                metrics=self.metrics,
                queue_depth=lambda: service.queue_depth,
                queue_capacity=s.queue.max_depth,
                worker=worker.health,
                buses=lambda: {name: a.health() for name, a in self.adapters.items()},
                kb_chunks=lambda: kb.chunks,
                state=self.state,
                lag=self.loop_lag,
                diagnosis=diagnosis.counters if diagnosis is not None else None,
            )
            for adapter in self.adapters.values():
                await adapter.start(self._router(routes))
            if diagnosis is not None:
                await self._release_events(diagnosis)
            await service.recover()
            ops.start_metrics()
            async with asyncio.TaskGroup() as tasks:
                background = [
                    tasks.create_task(service.run_intake(), name="intake"),
                    tasks.create_task(service.run_answering(), name="answering"),
                    tasks.create_task(self.loop_lag.run(), name="loop-lag"),
                    tasks.create_task(self._publish_health(health), name="health"),
                    tasks.create_task(self._purge(journal, journal_io), name="purge"),
                    tasks.create_task(kb.run_refresh(s.health.interval_s), name="kb-refresh"),
                ]
                self.ready.set()
                log.info(
                    "gateway.ready",
                    instance=s.instance,
                    buses=sorted(self.adapters),
                    kb_chunks=chunks,
                    start_ms=round((time.monotonic() - started) * 1000),
                )
                await stop.wait()
                await self._shutdown(service)
                for task in background:
                    task.cancel()
        finally:
            await worker.stop()
            await kb.close()
            await journal_io.run(journal.close)
            journal_io.shutdown()
            kb_io.shutdown()
            log.info("gateway.stopped", instance=s.instance)

    def _answer_cache(self, kb: LiveKnowledgeBase) -> dict[str, Any]:
        """The Answerer's cache arguments: none when the cache is off."""
        c = self.settings.answer_cache
        if not c.enabled:
            return {}
        cache = AnswerCache(similarity=c.similarity, ttl_s=c.ttl_s, max_entries=c.max_entries)
        return {"cache": cache, "kb_version": kb.version}

    def _diagnosis_subscriptions(self, bus: str) -> list[Subscription]:
        """What a bus listens to for diagnoses, in this order (the broker replays retained
        messages in subscription order): the gateways' status and health (who owns which
        device), every instance's per-alarm diagnoses (the board), then the device events."""
        s, d = self.settings, self.settings.diagnosis
        if not d.enabled:
            return []
        one = "+" if bus == "mqtt" else "*"
        if bus == "mqtt":
            status, health = s.mqtt.status_topic, s.mqtt.health_topic
            alarm, events = d.alarm_topic, d.event_topic
        else:
            status, health = s.nats.status_subject, s.nats.health_subject
            alarm, events = d.nats_alarm_subject, d.nats_event_subject

        def each(template: str) -> str:
            return template.format(site=s.site, instance=one, device_id=one, code=one)

        return [
            Subscription(ROUTE_PEER, each(status), shared=False, last_values=True),
            Subscription(ROUTE_PEER, each(health), shared=False, last_values=True),
            Subscription(ROUTE_DIAGNOSIS_MIRROR, each(alarm), shared=False, last_values=True),
            Subscription(ROUTE_DEVICE_EVENT, s.topic(events), shared=False),
        ]

    def _diagnosis_routes(self, diagnosis: DiagnosisService) -> dict[str, MessageHandler]:
        # Device events wait until the board and the roster are rebuilt (`_release_events`).
        diagnosis.synced = False
        return {
            ROUTE_DEVICE_EVENT: diagnosis.on_event,
            ROUTE_PEER: diagnosis.on_peer,
            ROUTE_DIAGNOSIS_MIRROR: diagnosis.on_mirror,
        }

    async def _release_events(self, diagnosis: DiagnosisService) -> None:
        """When device events may be handled: MQTT replays retained diagnoses and statuses at
        subscription, and a resumed session may hold events from while this instance was down,
        so events wait until this instance's own online status comes back: published on
        connect after the subscriptions, it arrives after everything they replay (the service
        recognises it, `barrier_since`). NATS JetStream replayed the state stream inside
        `start`. Core NATS keeps nothing: the roster fills from the others' health messages,
        so events wait two health intervals."""
        if "mqtt" in self.adapters:
            return
        if self.settings.nats.mode == "core":
            wait = 2 * self.settings.health.interval_s
            asyncio.get_running_loop().call_later(wait, diagnosis.release, "roster_filled")
        else:
            diagnosis.release("state_replayed")

    def _shared_turns(self) -> SharedTurns | None:
        """The conversation turns every instance reads: the NATS bucket once connected."""
        nats = self.adapters.get("nats")
        return nats.conversations if isinstance(nats, NatsAdapter) else None

    def _build_adapters(self) -> None:
        """One adapter per enabled bus; a question is answered on the bus it arrived on."""
        s = self.settings
        d = s.diagnosis
        retained = sorted(
            {
                wildcard_subject(template.replace("{site}", s.site))
                for template in (
                    d.nats_diagnosis_subject,
                    d.nats_alarm_subject,
                    s.nats.status_subject,
                    s.nats.health_subject,
                )
            }
            if d.enabled
            else set()
        )
        if s.mqtt.enabled:
            self.adapters["mqtt"] = MqttAdapter(
                s.mqtt,
                client_id=s.mqtt_client_id,
                question_topic=s.topic(s.mqtt.question_topic),
                answer_topic_template=s.mqtt.answer_topic.replace("{site}", s.site),
                status_topic=s.topic(s.mqtt.status_topic),
                online_payload=self._status(GatewayState.ONLINE),
                offline_payload=self._status(GatewayState.OFFLINE),
                subscriptions=self._diagnosis_subscriptions("mqtt"),
                max_partial_backlog=s.streaming.max_backlog,
            )
        if s.nats.enabled:
            self.adapters["nats"] = NatsAdapter(
                s.nats,
                client_name=s.nats_name,
                question_subject=s.topic(s.nats.question_subject),
                answer_subject_template=s.nats.answer_subject.replace("{site}", s.site),
                status_subject=s.topic(s.nats.status_subject),
                online_payload=self._status(GatewayState.ONLINE),
                stream=s.topic(s.nats.jetstream.stream),
                subscriptions=self._diagnosis_subscriptions("nats"),
                retained_subjects=retained,
                state_stream=s.topic(s.nats.jetstream.state_stream),
                max_partial_backlog=s.streaming.max_backlog,
                conversations=(
                    (s.topic(s.conversation.nats_bucket), s.conversation.max_age_s)
                    if s.conversation.nats_bucket and s.conversation.max_turns
                    else None
                ),
            )
        if not self.adapters:
            log.warning("gateway.no_bus", hint="enable mqtt and/or nats")

    def _diagnosis_service(
        self,
        scheduler: PriorityScheduler,
        worker: WorkerSupervisor,
        kb: LiveKnowledgeBase,
    ) -> DiagnosisService:
        s, d = self.settings, self.settings.diagnosis
        threshold = d.similarity_threshold
        return DiagnosisService(
            cfg=d,
            adapters=self.adapters,
            addresses=self._diagnosis_addresses(),
            scheduler=scheduler,
            model=worker,
            search=kb.search,
            kb_version=kb.version,
            policy=DiagnosisPolicy(
                similarity_threshold=threshold
                if threshold is not None
                else s.kb.similarity_threshold,
                require_code_match=d.require_code_match,
                n_ctx=s.worker.n_ctx,
                max_tokens=d.max_tokens,
                temperature=d.temperature,
                fallback_summary=d.fallback_summary,
                fallback_action=d.fallback_action,
            ),
            max_payload_bytes=s.limits.max_payload_bytes,
            max_json_depth=s.limits.max_json_depth,
            roster=Roster(s.instance, timeout_s=d.owner_timeout_s),
            barrier_since=self.started_at if "mqtt" in self.adapters else None,
            # as long as a diagnosis may be postponed anyway (rate limit): its bound
            preemptible_s=d.rate_max_delay_s,
        )

    def _diagnosis_addresses(self) -> dict[str, DiagnosisAddress]:
        """Per bus, where diagnoses go (the NATS adapter picks its subjects up by name)."""
        s, d = self.settings, self.settings.diagnosis

        def site(template: str) -> str:
            return template.replace("{site}", s.site)

        return {
            "mqtt": DiagnosisAddress(site(d.diagnosis_topic), site(d.alarm_topic)),
            "nats": DiagnosisAddress(
                site(d.nats_diagnosis_subject), site(d.nats_alarm_subject), nats_token
            ),
        }

    @staticmethod
    def _router(routes: dict[str, MessageHandler]) -> MessageHandler:
        """Routing by table: the adapter tags each message with the subscription it matched."""

        def route(inbound: InboundMessage) -> None:
            handler = routes.get(inbound.route)
            if handler is None:
                log.warning("bus.unrouted", route=inbound.route, topic=inbound.topic)
                inbound.ack()
                return
            handler(inbound)

        return route

    async def _shutdown(self, service: QuestionService) -> None:
        """Stop taking questions, finish the one in progress (bounded), say we are offline."""
        log.info("gateway.stopping", queue_depth=service.queue_depth)
        service.stop_accepting()
        if self.diagnosis is not None:
            self.diagnosis.stop_accepting()
        finished = await service.drain(timeout_s=self.settings.shutdown.drain_timeout_s)
        if not finished:
            log.warning("gateway.stop_left_in_progress", hint="answered after restart")
        offline = self._status(GatewayState.OFFLINE, datetime.now(UTC))
        for adapter in self.adapters.values():
            await adapter.stop(offline)

    async def _publish_health(self, health: HealthReporter) -> None:
        s = self.settings
        topics = {"mqtt": s.topic(s.mqtt.health_topic), "nats": s.topic(s.nats.health_subject)}
        while True:
            try:
                snapshot = await health.snapshot()
                payload = snapshot.model_dump_json().encode()
                for name, adapter in self.adapters.items():
                    if adapter.connected:
                        await adapter.publish(topics[name], payload, retain=True, reliable=False)
            except Exception:
                log.exception("health.publish_failed")
            await asyncio.sleep(s.health.interval_s)

    async def _purge(self, journal: Journal, io: SerialExecutor) -> None:
        horizon = self.settings.journal.retention_h * 3600
        # Hourly, or four times per retention window when that is shorter: the journal then
        # never holds more than 1.25 windows of questions (a fixed hour let a short retention
        # grow the journal for an hour; found by the soak test, tests/soak/).
        interval = min(PURGE_INTERVAL_S, max(1.0, horizon / 4))
        while True:
            with contextlib.suppress(Exception):
                purged = await io.run(journal.purge, time.time() - horizon)
                if purged:
                    log.info("journal.purged", questions=purged)
            await asyncio.sleep(interval)
