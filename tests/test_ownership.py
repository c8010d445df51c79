"""Device ownership among live instances, the roster that decides it, the alarm-code token on
NATS, and the board's ordering of mirrored diagnoses: pure logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.diagnosis.addresses import DiagnosisAddress, code_from_nats_token, nats_token
from gateway.diagnosis.board import AlarmBoard
from gateway.diagnosis.ownership import Roster, owner
from models.device import Severity
from models.diagnosis import Diagnosis, DiagnosisState
from models.health import GatewayState

DEVICES = [f"D{i}" for i in range(300)]
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_every_instance_computes_the_same_owner_and_a_death_moves_only_its_devices() -> None:
    three = ["gw-a", "gw-b", "gw-c"]
    before = {d: owner(d, three) for d in DEVICES}
    assert before == {d: owner(d, list(reversed(three))) for d in DEVICES}, "order-free"
    counts = {i: sum(1 for o in before.values() if o == i) for i in three}
    assert all(count > 50 for count in counts.values()), counts  # spread, not all on one
    after = {d: owner(d, ["gw-a", "gw-c"]) for d in DEVICES}
    moved = {d for d in DEVICES if before[d] != after[d]}
    assert moved == {d for d in DEVICES if before[d] == "gw-b"}
    assert owner("P2", []) is None


def test_roster_offline_status_kills_at_once_and_silence_after_the_timeout() -> None:
    roster = Roster("gw-a", timeout_s=30)
    now = NOW.timestamp()
    roster.status("gw-b", GatewayState.ONLINE, NOW - timedelta(hours=2))
    roster.heartbeat("gw-b", NOW - timedelta(seconds=5))
    roster.status("gw-c", GatewayState.ONLINE, NOW - timedelta(seconds=1))
    assert roster.live(now) == ["gw-a", "gw-b", "gw-c"]
    roster.status("gw-c", GatewayState.OFFLINE, NOW - timedelta(hours=1))  # its Last Will
    assert roster.live(now) == ["gw-a", "gw-b"]
    assert roster.live(now + 26) == ["gw-a"], "no heartbeat for 31 s: dead"
    roster.heartbeat("gw-b", NOW + timedelta(seconds=25))
    assert roster.live(now + 26) == ["gw-a", "gw-b"]


def test_a_replayed_old_heartbeat_does_not_revive_an_instance() -> None:
    roster = Roster("gw-a", timeout_s=30)
    roster.heartbeat("gw-dead", NOW - timedelta(hours=1))  # retained health of a dead box
    assert roster.live(NOW.timestamp()) == ["gw-a"]
    assert all(roster.owns(d, NOW.timestamp()) for d in DEVICES[:20])


def test_an_alarm_code_with_dots_is_one_nats_token_and_comes_back() -> None:
    assert nats_token("TT-101.high.2") == "TT-101~high~2"
    assert code_from_nats_token(nats_token("TT-101.high.2")) == "TT-101.high.2"
    nats = DiagnosisAddress(
        "edge.p.diagnosis.{device_id}", "edge.p.diagnosis.{device_id}.{code}", nats_token
    )
    assert nats.alarm_topic("C3", "TT-101.high") == "edge.p.diagnosis.C3.TT-101~high"
    mqtt = DiagnosisAddress("edge/p/diagnosis/{device_id}", "edge/p/diagnosis/{device_id}/{code}")
    assert mqtt.alarm_topic("C3", "TT-101.high") == "edge/p/diagnosis/C3/TT-101.high"


def diagnosis(code: str, state: DiagnosisState, at: datetime) -> Diagnosis:
    return Diagnosis(
        device_id="P7",
        alarm_code=code,
        severity=Severity.CRITICAL,
        state=state,
        summary="s",
        probable_causes=(),
        recommended_actions=(),
        sources=(),
        confidence=0.0,
        fallback=True,
        cached=False,
        repeat_count=1,
        value=None,
        unit=None,
        model="",
        raised_at=at,
        generated_at=at,
    )


def test_a_late_mirrored_copy_does_not_undo_a_newer_state() -> None:
    board = AlarmBoard(max_devices=10, max_alarms_per_device=10)
    board.update(diagnosis("X1", DiagnosisState.CLEARED, NOW))
    headline = board.update(diagnosis("X1", DiagnosisState.ACTIVE, NOW - timedelta(seconds=3)))
    assert headline.state == DiagnosisState.CLEARED
    newer = board.update(diagnosis("X1", DiagnosisState.ACTIVE, NOW + timedelta(seconds=3)))
    assert newer.state == DiagnosisState.ACTIVE


def test_the_roster_stays_bounded_whoever_publishes_statuses() -> None:
    from gateway.diagnosis.ownership import MAX_PEERS

    roster = Roster("gw-a", timeout_s=30)
    for i in range(MAX_PEERS + 50):
        roster.status(f"fake-{i}", GatewayState.ONLINE, NOW)
    assert len(roster.live(NOW.timestamp())) == MAX_PEERS + 1  # the bound, and itself
