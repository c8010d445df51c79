"""Device events in, retained diagnoses out: the flood-proof front of the diagnosis pipeline.

Events are acknowledged at once and never journaled: an alarm is state, not a request, so a
redelivered or repeated event is idempotent (it only raises a repeat count) and the retained
diagnosis on the broker is the durable record. Nothing is dropped silently: every refused,
coalesced or postponed event is counted in the health message (`diagnosis` counters).

Memory is bounded however many events arrive: open windows, rate-limit buckets, the cache and
the alarm board are all bounded maps, and an event that fits none of them is counted, not queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from gateway.bus import BusAdapter, InboundMessage
from gateway.config import DiagnosisConfig
from gateway.diagnosis.addresses import DiagnosisAddress
from gateway.diagnosis.board import AlarmBoard
from gateway.diagnosis.cache import DiagnosisCache
from gateway.diagnosis.coalescer import Coalescer, Offer, RaisingEvent, Window
from gateway.diagnosis.metrics import DiagnosisMetrics
from gateway.diagnosis.ownership import Roster
from gateway.diagnosis.pipeline import (
    Alarm,
    Diagnosed,
    DiagnosisPolicy,
    KbVersion,
    Preempted,
    StructuredModel,
    diagnose,
    to_diagnosis,
)
from gateway.errors import GatewayError
from gateway.logging import get_logger
from gateway.questions.intake import PayloadRefused, is_identifier, parse_json_object
from gateway.questions.ratelimit import RateLimiter
from gateway.rag.search import Search
from gateway.worker.scheduler import Lane, PriorityScheduler
from models.device import DEVICE_EVENT_ADAPTER, AlarmCleared, Severity
from models.diagnosis import Diagnosis, DiagnosisState
from models.health import DiagnosisCounters, GatewayState, Health, Status

log = get_logger(__name__)

DEFAULT_PREEMPTIBLE_S = 120.0
"""How long after its alarm a routine diagnosis still gives way to questions (the app passes
diagnosis.rate_max_delay_s, the delay a diagnosis may get from the rate limit anyway); after
that it runs to its end, so an endless stream of questions cannot starve it."""

_PEER_ADAPTER: TypeAdapter[Health | Status] = TypeAdapter(Health | Status)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _alarm(device_id: str, event: RaisingEvent | AlarmCleared, severity: Severity) -> Alarm:
    return Alarm(device_id, event.code, severity, event.text, event.value, event.unit)


class DiagnosisService:
    def __init__(
        self,
        *,
        cfg: DiagnosisConfig,
        adapters: Mapping[str, BusAdapter],
        addresses: Mapping[str, DiagnosisAddress],
        scheduler: PriorityScheduler,
        model: StructuredModel,
        search: Search,
        kb_version: KbVersion,
        policy: DiagnosisPolicy,
        max_payload_bytes: int,
        max_json_depth: int = 16,
        roster: Roster | None = None,
        barrier_since: datetime | None = None,
        preemptible_s: float = DEFAULT_PREEMPTIBLE_S,
    ) -> None:
        """`roster`: the live instances, when several may share the broker; a device's events
        are then handled only by its owner. None: this instance handles every device."""
        self._cfg = cfg
        self.roster = roster
        self._barrier_since = barrier_since
        self._preemptible_s = preemptible_s
        self.synced = True
        """False until `release`: the app sets it while the board and roster are rebuilt."""
        self._held: list[InboundMessage] = []
        self._adapters = adapters
        self._addresses = addresses
        self._scheduler = scheduler
        self._model = model
        self._search = search
        self._kb_version = kb_version
        self.policy = policy
        self._max_payload = max_payload_bytes
        self._max_depth = max_json_depth
        self.metrics = DiagnosisMetrics()
        self.coalescer = Coalescer(window_s=cfg.coalesce_window_s, max_open=cfg.max_open_windows)
        self._limiter = RateLimiter(
            per_minute=cfg.rate_per_minute,
            burst=cfg.rate_burst,
            max_delay_s=cfg.rate_max_delay_s,
            max_keys=cfg.max_devices,
        )
        self._cache: DiagnosisCache[Diagnosed] = DiagnosisCache(
            ttl_s=cfg.cache_ttl_s, max_entries=cfg.cache_max_entries
        )
        self.board = AlarmBoard(
            max_devices=cfg.max_devices, max_alarms_per_device=cfg.max_alarms_per_device
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = True

    def stop_accepting(self) -> None:
        self._accepting = False

    # ---- intake (event loop, never blocks, never raises) -------------------------------------

    def on_event(self, inbound: InboundMessage) -> None:
        if not self._accepting:
            return  # not acknowledged: redelivered to the next session
        if not self.synced:
            # Before the broker has replayed the retained diagnoses and the gateways' status
            # (see `release`), the board and the roster are incomplete: wait, in order.
            if len(self._held) < self._cfg.max_open_windows:
                self._held.append(inbound)
                return
            self.synced = True  # a flood before the barrier: go ahead rather than drop
            self._release_held()
        self._take(inbound)

    def _take(self, inbound: InboundMessage) -> None:
        inbound.ack()
        self.metrics.events_received += 1
        device = inbound.sender_id
        if device is None or not is_identifier(device):
            self._reject(inbound, "device id in topic is not valid")
            return
        if self.roster is not None and not self.roster.owns(device, time.time()):
            self.metrics.not_owned += 1
            return  # its owner, which receives the same event, handles it
        try:
            # The same JSON rules as questions: no duplicate keys, NaN, NUL or deep nesting.
            parse_json_object(
                inbound.payload, max_bytes=self._max_payload, max_depth=self._max_depth
            )
        except PayloadRefused as refused:
            self._reject(inbound, refused.message)
            return
        try:
            event = DEVICE_EVENT_ADAPTER.validate_json(inbound.payload)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            self._reject(inbound, f"invalid event: {where}: {error['msg']}")
            return
        if self._stale(device, event):
            self.metrics.stale += 1
            log.info(
                "device_event.stale",
                device_id=device,
                alarm_code=event.code,
                kind=event.kind,
                timestamp=event.timestamp.isoformat(),
            )
            return
        if isinstance(event, AlarmCleared):
            self._clear(device, event, inbound.topic)
        else:
            self._raise(device, event, inbound.topic)

    def release(self, reason: str) -> None:
        """From now on device events are handled; the ones held meanwhile go first, in order."""
        if not self.synced:
            self.synced = True
            log.info(
                "diagnosis.synced",
                reason=reason,
                board_devices=len(self.board),
                held=len(self._held),
            )
            self._release_held()

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for inbound in held:
            self.on_event(inbound)

    def _stale(self, device: str, event: RaisingEvent | AlarmCleared) -> bool:
        """An event older than what the board already shows for its alarm: a copy the broker
        kept for this instance while it was down, handled meanwhile by another instance. Both
        times are the device's own clock (`raised_at` is the raising event's timestamp)."""
        known = self.board.get(device, event.code)
        if known is None:
            return False
        at, raised = _aware(event.timestamp), _aware(known.raised_at)
        return at < raised if isinstance(event, AlarmCleared) else at <= raised

    def on_peer(self, inbound: InboundMessage) -> None:
        """A gateway's status or health message (ours included): the roster of live instances."""
        inbound.ack()
        if self.roster is None or self._oversized(inbound, "peer_status.too_large"):
            return
        try:
            peer = _PEER_ADAPTER.validate_json(inbound.payload)
        except ValidationError:
            log.warning("peer_status.invalid", topic=inbound.topic, bytes=len(inbound.payload))
            return
        if isinstance(peer, Health):
            self.roster.heartbeat(peer.instance, peer.generated_at)
            return
        self.roster.status(peer.instance, peer.state, peer.since)
        own = peer.instance == self.roster.self_id and peer.state == GatewayState.ONLINE
        if own and self._barrier_since is not None and peer.since == self._barrier_since:
            # Our own online status of this run, published after the subscriptions: what the
            # broker replays at subscription (diagnoses, statuses) has all come before it.
            self.release("own_status")

    def on_mirror(self, inbound: InboundMessage) -> None:
        """A per-alarm diagnosis on the bus, ours or another instance's (live, or replayed by
        the broker at start): the board then knows every active alarm of every device."""
        inbound.ack()
        if self._oversized(inbound, "diagnosis_mirror.too_large"):
            return
        try:
            diagnosis = Diagnosis.model_validate_json(inbound.payload)
        except ValidationError:
            log.warning("diagnosis_mirror.invalid", topic=inbound.topic, bytes=len(inbound.payload))
            return
        if diagnosis.generated_at.tzinfo is None or diagnosis.raised_at.tzinfo is None:
            # Not a gateway's (ours carry offsets); the board compares times, never naive ones.
            log.warning("diagnosis_mirror.invalid", topic=inbound.topic, reason="naive time")
            return
        self.board.update(diagnosis)

    def _oversized(self, inbound: InboundMessage, event: str) -> bool:
        """Anyone may publish on the topics the gateways share: never parse a huge payload."""
        if len(inbound.payload) <= self._max_payload:
            return False
        log.warning(event, topic=inbound.topic, bytes=len(inbound.payload))
        return True

    def _reject(self, inbound: InboundMessage, reason: str) -> None:
        self.metrics.events_rejected += 1
        log.warning(
            "device_event.rejected",
            topic=inbound.topic,
            device_id=inbound.sender_id,
            reason=reason,
            payload_bytes=len(inbound.payload),
        )

    def _raise(self, device: str, event: RaisingEvent, topic: str) -> None:
        now = time.monotonic()
        offer, window = self.coalescer.offer(device, event, now)
        if offer is Offer.COALESCED:
            self.metrics.coalesced += 1
            return
        bound = log.bind(device_id=device, alarm_code=event.code, topic=topic)
        if offer is Offer.OVERFLOW or window is None:
            self.metrics.dropped_overflow += 1
            if self.metrics.dropped_overflow & (self.metrics.dropped_overflow - 1) == 0:
                bound.warning("device_event.overflow", dropped=self.metrics.dropped_overflow)
            return
        delay = self._limiter.reserve(device, now)
        if delay is None:
            self.coalescer.close(window)
            self.metrics.dropped_rate_limited += 1
            bound.warning("device_event.rate_limited", dropped=self.metrics.dropped_rate_limited)
            return
        lane = Lane.CRITICAL if event.severity == Severity.CRITICAL else Lane.ROUTINE
        bound.info("alarm.window_opened", severity=str(event.severity), delay_s=round(delay, 3))

        async def job() -> None:
            await self._diagnose_window(window)

        if delay > 0:
            self.metrics.rate_delayed += 1
            asyncio.get_running_loop().call_later(delay, self._scheduler.put, lane, job)
        else:
            self._scheduler.put(lane, job)

    def _clear(self, device: str, event: AlarmCleared, topic: str) -> None:
        self.metrics.cleared += 1
        if self.coalescer.cancel((device, event.code)) is not None:
            self.metrics.superseded += 1
        previous = self.board.get(device, event.code)
        if previous is not None:
            cleared = previous.model_copy(
                update={"state": DiagnosisState.CLEARED, "generated_at": datetime.now(UTC)}
            )
        else:
            alarm = _alarm(device, event, event.severity)
            nothing = Diagnosed("no_knowledge", None, (), "", 0.0)
            cleared = to_diagnosis(
                alarm,
                nothing,
                self.policy,
                state=DiagnosisState.CLEARED,
                repeat_count=1,
                cached=False,
                raised_at=event.timestamp,
            ).model_copy(
                update={
                    "summary": f"Alarm {event.code} cleared.",
                    "fallback": False,
                    "recommended_actions": (),
                }
            )
        log.info("alarm.cleared", device_id=device, alarm_code=event.code, topic=topic)
        self._spawn(self._publish(cleared))

    # ---- the job (runs in the shared answering task) -----------------------------------------

    async def _diagnose_window(self, window: Window) -> None:
        if window.closed:
            return  # cleared before its turn; counted as superseded
        alarm = _alarm(window.device_id, window.first, window.severity)
        bound = log.bind(device_id=alarm.device_id, alarm_code=alarm.code)
        waited = time.monotonic() - window.opened_at
        preemptible = window.severity != Severity.CRITICAL and waited < self._preemptible_s
        try:
            version = await self._kb_version()
            now = time.monotonic()
            cached = self._cache.get(window.key, kb_version=version, now=now)
            if cached is None:
                if preemptible and self._urgent_waiting():
                    raise Preempted  # a question came during retrieval: let it go first
                diagnosed = await diagnose(
                    alarm, self._model, self._search, self.policy, preemptible=preemptible
                )
                if diagnosed.reason == "model":
                    self.metrics.model_runs += 1
                if diagnosed.reason != "invalid_output":
                    self._cache.put(window.key, diagnosed, kb_version=version, now=now)
            else:
                self.metrics.cached += 1
            window.result = (cached or diagnosed, cached is not None)
        except Preempted:
            # A question arrived while this routine diagnosis was generating: it stopped
            # between two tokens; it goes back to its lane and runs again after the question.
            window.preemptions += 1
            self.metrics.preempted += 1
            bound.info("diagnosis.preempted", times=window.preemptions)
            self._scheduler.put(Lane.ROUTINE, lambda: self._diagnose_window(window))
            return
        except GatewayError as exc:
            self.metrics.failed += 1
            bound.warning("diagnosis.failed", code=str(exc.code), error=exc.message)
            window.result = (Diagnosed("invalid_output", None, (), "", 0.0), False)
        delay = window.deadline - time.monotonic()
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._close_window, window)
        else:
            self._close_window(window)

    def _urgent_waiting(self) -> bool:
        return bool(self._scheduler.depth(Lane.QUESTION) + self._scheduler.depth(Lane.CRITICAL))

    def _close_window(self, window: Window) -> None:
        if window.closed:
            return
        count = self.coalescer.close(window)
        assert isinstance(window.result, tuple)
        diagnosed, cached = window.result
        if diagnosed.reason == "invalid_output":
            self.metrics.invalid_output += 1
        if diagnosed.draft is None:
            self.metrics.fallback += 1
        diagnosis = to_diagnosis(
            _alarm(window.device_id, window.first, window.severity),
            diagnosed,
            self.policy,
            state=DiagnosisState.ACTIVE,
            repeat_count=count,
            cached=cached,
            raised_at=window.raised_at,
        )
        self._spawn(self._publish(diagnosis))

    # ---- publishing ----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, diagnosis: Diagnosis) -> None:
        """Alarm topic and device headline, retained, QoS 1; both publishes start before the
        first await, so the broker sees them in the order the board changed."""
        headline = self.board.update(diagnosis)
        device, code = diagnosis.device_id, diagnosis.alarm_code
        sends = []
        for bus, address in self._addresses.items():
            adapter = self._adapters.get(bus)
            if adapter is None:
                continue
            alarm_topic = address.alarm_topic(device, code)
            device_topic = address.device_topic(device)
            payload = diagnosis.model_dump_json().encode()
            sends.append(adapter.publish(alarm_topic, payload, retain=True))
            sends.append(
                adapter.publish(device_topic, headline.model_dump_json().encode(), retain=True)
            )
        results = await asyncio.gather(*sends, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            self.metrics.failed += 1
            log.error(
                "diagnosis.publish_failed", device_id=device, alarm_code=code, error=str(errors[0])
            )
            return
        self.metrics.published += 1
        log.info(
            "diagnosis.published",
            device_id=device,
            alarm_code=code,
            state=str(diagnosis.state),
            fallback=diagnosis.fallback,
            cached=diagnosis.cached,
            repeat_count=diagnosis.repeat_count,
        )

    def counters(self) -> DiagnosisCounters:
        return self.metrics.snapshot(open_windows=len(self.coalescer))
