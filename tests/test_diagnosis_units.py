"""Pure units of the diagnosis path: coalescer, rate limiter, priority scheduler, cache, board."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from gateway.diagnosis.board import AlarmBoard
from gateway.diagnosis.cache import DiagnosisCache
from gateway.diagnosis.coalescer import Coalescer, Offer
from gateway.diagnosis.pipeline import mentions_code
from gateway.questions.ratelimit import RateLimiter
from gateway.worker.scheduler import Job, Lane, PriorityScheduler
from models.device import DEVICE_EVENT_ADAPTER, AlarmRaised, Severity
from models.diagnosis import Diagnosis, DiagnosisDraft, DiagnosisState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def raised(code: str, severity: Severity = Severity.WARNING) -> AlarmRaised:
    return AlarmRaised(kind="alarm_raised", code=code, severity=severity, timestamp=T0)


def test_coalescer_counts_repeats_within_a_window_and_reopens_after_close() -> None:
    c = Coalescer(window_s=5.0, max_open=10)
    offer, w = c.offer("P2", raised("E203"), now=0.0)
    assert offer is Offer.OPENED
    assert w is not None
    for i in range(99):
        assert c.offer("P2", raised("E203"), now=0.01 * i)[0] is Offer.COALESCED
    assert c.offer("P2", raised("E101"), now=1.0)[0] is Offer.OPENED
    assert c.offer("C3", raised("E203"), now=1.0)[0] is Offer.OPENED
    assert c.close(w) == 100
    assert w.closed
    offer, w2 = c.offer("P2", raised("E203"), now=6.0)
    assert offer is Offer.OPENED
    assert w2 is not w
    assert w2 is not None
    assert w2.count == 1


def test_coalescer_keeps_escalated_severity_and_is_bounded() -> None:
    c = Coalescer(window_s=5.0, max_open=2)
    _, w = c.offer("P2", raised("E1"), now=0.0)
    c.offer("P2", raised("E1", Severity.CRITICAL), now=0.1)
    assert w is not None
    assert w.severity is Severity.CRITICAL
    c.offer("P2", raised("E2"), now=0.0)
    assert c.offer("P2", raised("E3"), now=0.0) == (Offer.OVERFLOW, None)
    assert len(c) == 2
    assert c.cancel(("P2", "E1")) is w
    assert w.closed


def test_rate_limiter_spreads_a_burst_and_refuses_past_max_delay() -> None:
    rl = RateLimiter(per_minute=60, burst=2, max_delay_s=2.5, max_keys=100)
    assert rl.reserve("P2", 0.0) == 0.0
    assert rl.reserve("P2", 0.0) == 0.0
    assert rl.reserve("P2", 0.0) == pytest.approx(1.0)
    assert rl.reserve("P2", 0.0) == pytest.approx(2.0)
    assert rl.reserve("P2", 0.0) is None  # 3 s away > max_delay_s
    assert rl.reserve("C3", 0.0) == 0.0  # other devices are not affected
    assert rl.reserve("P2", 10.0) == 0.0  # refilled


def test_rate_limiter_map_is_bounded() -> None:
    rl = RateLimiter(per_minute=1, burst=1, max_delay_s=0, max_keys=50)
    for i in range(10_000):
        rl.reserve(f"d{i}", 0.0)
    assert len(rl) == 50


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def job(name: str) -> Job:
    async def run() -> None:
        return None

    run.__name__ = name
    return run


def test_scheduler_serves_critical_before_questions_before_routine() -> None:
    s = PriorityScheduler(burst=4, max_wait_s=100, clock=FakeClock())
    s.put(Lane.ROUTINE, job("r1"))
    s.put(Lane.QUESTION, job("q1"))
    s.put(Lane.CRITICAL, job("c1"))
    order = [s.take() for _ in range(3)]
    assert [p[0] for p in order if p is not None] == [Lane.CRITICAL, Lane.QUESTION, Lane.ROUTINE]
    assert s.take() is None


@pytest.mark.parametrize("burst", [1, 2, 5])
def test_scheduler_never_starves_questions_under_an_endless_critical_flood(burst: int) -> None:
    """The clock stands still (so deadlines never help): only the burst rule can save them."""
    s = PriorityScheduler(burst=burst, max_wait_s=1e9, clock=FakeClock())
    s.put(Lane.ROUTINE, job("r"))
    for q in range(3):
        s.put(Lane.QUESTION, job(f"q{q}"))
    waits: list[int] = []
    since = 0
    for _ in range(200):
        s.put(Lane.CRITICAL, job("c"))  # new critical alarms keep arriving before every pick
        s.put(Lane.CRITICAL, job("c"))
        picked = s.take()
        assert picked is not None
        since += 1
        if picked[0] is not Lane.CRITICAL:
            waits.append(since)
            since = 0
    assert len(waits) >= 4  # all three questions and the routine job were served
    assert max(waits) <= burst + 1


def test_scheduler_deadline_lets_an_old_question_pass_newer_criticals() -> None:
    clock = FakeClock()
    s = PriorityScheduler(burst=1000, max_wait_s=5.0, clock=clock)
    s.put(Lane.QUESTION, job("q"))  # deadline 5
    clock.t = 4.0
    s.put(Lane.CRITICAL, job("c-early"))  # deadline 4: passes the question
    clock.t = 6.0
    s.put(Lane.CRITICAL, job("c-late"))  # deadline 6: does not
    lanes = [p[0] for p in (s.take(), s.take(), s.take()) if p is not None]
    assert lanes == [Lane.CRITICAL, Lane.QUESTION, Lane.CRITICAL]


async def test_scheduler_get_waits_for_work() -> None:
    s = PriorityScheduler()
    getter = asyncio.create_task(s.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    j = job("x")
    s.put(Lane.QUESTION, j)
    assert await asyncio.wait_for(getter, 1) is j


def test_cache_hits_within_ttl_and_misses_on_kb_change() -> None:
    cache: DiagnosisCache[str] = DiagnosisCache(ttl_s=10, max_entries=2)
    cache.put(("P2", "E203"), "d1", kb_version=3, now=0)
    assert cache.get(("P2", "E203"), kb_version=3, now=5) == "d1"
    assert cache.get(("P2", "E203"), kb_version=4, now=5) is None
    cache.put(("P2", "E203"), "d1", kb_version=3, now=0)
    assert cache.get(("P2", "E203"), kb_version=3, now=11) is None
    for i in range(5):
        cache.put(("P2", f"E{i}"), "x", kb_version=3, now=0)
    assert len(cache) == 2


def diagnosis(code: str, severity: Severity, state: DiagnosisState, at: int) -> Diagnosis:
    return Diagnosis(
        device_id="P2",
        alarm_code=code,
        severity=severity,
        state=state,
        summary="s",
        confidence=0.5,
        fallback=False,
        cached=False,
        repeat_count=1,
        model="m",
        raised_at=T0,
        generated_at=T0 + timedelta(seconds=at),
    )


def test_board_headline_is_the_most_severe_active_alarm_then_the_last_cleared() -> None:
    b = AlarmBoard(max_devices=10, max_alarms_per_device=3)
    b.update(diagnosis("W020", Severity.WARNING, DiagnosisState.ACTIVE, 1))
    head = b.update(diagnosis("E203", Severity.CRITICAL, DiagnosisState.ACTIVE, 2))
    assert head.alarm_code == "E203"
    head = b.update(diagnosis("E101", Severity.WARNING, DiagnosisState.ACTIVE, 3))
    assert head.alarm_code == "E203"
    head = b.update(diagnosis("E203", Severity.CRITICAL, DiagnosisState.CLEARED, 4))
    assert head.alarm_code == "E101"  # most recent of the remaining active ones (same severity)
    b.update(diagnosis("E101", Severity.WARNING, DiagnosisState.CLEARED, 5))
    head = b.update(diagnosis("W020", Severity.WARNING, DiagnosisState.CLEARED, 6))
    assert head.alarm_code == "W020"
    assert head.state is DiagnosisState.CLEARED
    for i in range(10):
        b.update(diagnosis(f"X{i}", Severity.INFO, DiagnosisState.ACTIVE, 10 + i))
    assert b.get("P2", "X9") is not None
    assert b.get("P2", "X0") is None


def test_event_and_draft_contracts() -> None:
    event = DEVICE_EVENT_ADAPTER.validate_json(
        b'{"kind": "threshold_crossed", "code": "TT-101", "severity": "critical", "value": 71,'
        b' "unit": "degC", "threshold": 65, "timestamp": "2026-01-01T00:00:00Z"}'
    )
    assert event.kind == "threshold_crossed"
    assert event.value == 71.0
    for bad in (
        b'{"kind": "alarm_raised", "code": "E/1", "timestamp": "2026-01-01T00:00:00Z"}',
        b'{"kind": "alarm_raised", "code": "E1", "timestamp": "2026-01-01T00:00:00Z", "x": 1}',
        b'{"kind": "exploded", "code": "E1", "timestamp": "2026-01-01T00:00:00Z"}',
    ):
        with pytest.raises(ValueError):
            DEVICE_EVENT_ADAPTER.validate_json(bad)
    with pytest.raises(ValueError):
        DiagnosisDraft.model_validate_json(
            '{"summary": "s", "probable_causes": ["a"], "recommended_actions": ["b"],'
            ' "confidence": 1.5}'
        )
    assert mentions_code("see alarm E203: low pressure", "e203")
    assert not mentions_code("alarm E2031", "E203")


def test_grammar_cache_compiles_each_schema_once_and_types_bad_schemas() -> None:
    from gateway.diagnosis.pipeline import DRAFT_SCHEMA
    from gateway.worker.engine import GrammarCache, SchemaGrammarError

    cache = GrammarCache(capacity=2)
    first = cache.get(DRAFT_SCHEMA)
    assert cache.get(DRAFT_SCHEMA) is first
    assert cache.compiled == 1
    # The grammar encodes what llama.cpp's converter supports: the confidence enum and the
    # single-line string pattern (minimum/maximum would be silently ignored).
    assert '"0.7"' in first._grammar
    assert "\\x00-\\x1f" in first._grammar
    with pytest.raises(SchemaGrammarError):
        cache.get('{"type": "string", "pattern": "unanchored("}')


def test_a_device_event_time_without_offset_is_refused() -> None:
    naive = (
        b'{"kind": "alarm_raised", "code": "E203", "severity": "critical",'
        b' "timestamp": "2026-01-01T08:00:00"}'
    )
    with pytest.raises(ValidationError, match="timezone"):
        DEVICE_EVENT_ADAPTER.validate_json(naive)
    aware = naive.replace(b'08:00:00"', b'08:00:00+01:00"')
    assert DEVICE_EVENT_ADAPTER.validate_json(aware).timestamp.utcoffset() is not None


def test_the_shared_json_rules_refuse_a_duplicate_key_by_name() -> None:
    """The rules DiagnosisService.on_event applies to device events, as intake does to
    questions: a duplicate key is refused (the last one does not silently win), by name."""
    from gateway.questions.intake import PayloadRefused, parse_json_object

    twice = b'{"kind": "alarm_raised", "code": "E203", "code": "E204", "severity": "info"}'
    with pytest.raises(PayloadRefused, match="duplicate key 'code'"):
        parse_json_object(twice, max_bytes=4096, max_depth=8)
