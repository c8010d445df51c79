"""One device, one owner, a board that survives: three gateway processes on one real mosquitto.

The device's alarms are raised on one instance, more arrive after it was killed (its owner
moved to the next instance), the clear reaches a third after the second was killed, and the
first, restarted, takes the device back with its board rebuilt from the broker's retained
diagnoses. At every step SCADA's retained headline for the device is checked: a clear must never
hide another active alarm of the device, whichever instance handles it.

Alarm codes the demo manuals do not mention get a fallback diagnosis, so no model runs and the
test stays fast; ownership and the board do not depend on the model.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import nats
import pytest

from gateway.config import Settings
from gateway.diagnosis.ownership import owner
from models.diagnosis import Diagnosis
from tests.brokers import Mosquitto, NatsServer
from tests.conftest import SettingsFactory
from tests.daemon import Daemon
from tests.devices import event, event_topic
from tests.harness import GatewayRunner

pytestmark = pytest.mark.slow

DEVICE = "P7"
INSTANCES = ("gw-a", "gw-b", "gw-c")


@dataclass
class Scada:
    """A SCADA client: every diagnosis and status message, in arrival order."""

    client: aiomqtt.Client
    received: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def collect(self) -> None:
        async for message in self.client.messages:
            async with self._arrived:
                payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                self.received.append((str(message.topic), payload))
                self._arrived.notify_all()

    async def next_on(self, topic: str, after: int, timeout_s: float = 60.0) -> int:
        """Index of the first message on `topic` at or after position `after`."""

        def find() -> int | None:
            for i in range(after, len(self.received)):
                if self.received[i][0] == topic:
                    return i
            return None

        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: find() is not None)
        found = find()
        assert found is not None
        return found

    async def status(self, instance: str, state: str, timeout_s: float = 90.0) -> None:
        topic = f"edge/plant1/gateway/{instance}/status"

        def latest() -> object:
            states = [p.get("state") for t, p in self.received if t == topic]
            return states[-1] if states else None

        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: latest() == state)


@asynccontextmanager
async def scada(port: int) -> AsyncIterator[Scada]:
    async with aiomqtt.Client("127.0.0.1", port, identifier="scada-test") as client:
        s = Scada(client)
        await client.subscribe("edge/plant1/diagnosis/#", qos=1)
        await client.subscribe("edge/plant1/gateway/+/status", qos=1)
        task = asyncio.create_task(s.collect())
        try:
            yield s
        finally:
            task.cancel()


async def retained_headline(port: int) -> dict[str, object]:
    """What a SCADA client connecting now gets for the device: the retained headline."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="scada-late") as client:
        await client.subscribe(f"edge/plant1/diagnosis/{DEVICE}", qos=1)
        async with asyncio.timeout(10):
            async for message in client.messages:
                value: dict[str, object] = json.loads(bytes(message.payload))
                return value
    raise AssertionError("no retained headline")


async def test_a_clear_never_hides_another_active_alarm_across_instances_and_restarts(
    mosquitto: Mosquitto, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(mosquitto)
    first, second, third = _ranking(DEVICE)
    config = tmp_path / "gw.toml"
    config.write_text("# everything on the command line\n")

    def start(instance: str) -> Daemon:
        data = tmp_path / instance
        data.mkdir(exist_ok=True)
        (data / "kb.sqlite3").write_bytes((settings.data_dir / "kb.sqlite3").read_bytes())
        return Daemon(
            config,
            tmp_path / f"{instance}.log",
            overrides=(
                f"instance={instance}",
                f"data_dir={data}",
                f"cache_dir={settings.cache_dir}",
                f"mqtt.port={mosquitto.port}",
                "health.interval_s=0.5",
                "diagnosis.coalesce_window_s=0",
                "diagnosis.owner_timeout_s=30",
                "worker.n_threads=1",
            ),
        )

    daemons = {i: start(i) for i in INSTANCES}
    try:
        async with scada(mosquitto.port) as s:
            for instance in INSTANCES:
                await s.status(instance, "online")

            # 1. Raised: handled by the owner alone.
            alarm, head = await step(s, event("alarm_raised", "X1", "critical"), "X1")
            assert alarm == ("X1", "active")
            assert head == ("X1", "active")
            assert handled(daemons, "alarm.window_opened", "X1") == [first]

            # 2. The owner is killed; the next alarm of the device goes to the next instance,
            #    whose board knows X1 from the bus: the headline stays the critical X1.
            await kill(s, daemons[first], first)
            alarm, head = await step(s, event("alarm_raised", "X2", "warning"), "X2")
            assert alarm == ("X2", "active")
            assert head == ("X1", "active")
            assert handled(daemons, "alarm.window_opened", "X2") == [second]

            # 3. The second is killed too; the clear of X2 reaches the third: X1 is still active
            #    and must stay the headline (the bug: a board that never saw X1 said "cleared").
            await kill(s, daemons[second], second)
            alarm, head = await step(s, event("alarm_cleared", "X2"), "X2")
            assert alarm == ("X2", "cleared")
            assert head == ("X1", "active")
            assert handled(daemons, "alarm.cleared", "X2") == [third]
            assert alarm_state(await retained_headline(mosquitto.port)) == ("X1", "active")

            # 4. The first comes back: it owns the device again, its board rebuilt from the
            #    retained diagnoses; clearing X1 leaves no active alarm: the headline is cleared.
            daemons[first] = start(first)
            await s.status(first, "online")
            daemons[first].wait_event("gateway.ready")
            alarm, head = await step(s, event("alarm_cleared", "X1"), "X1")
            assert alarm == ("X1", "cleared")
            assert head == ("X1", "cleared")
            assert handled(daemons, "alarm.cleared", "X1") == [first]
            assert alarm_state(await retained_headline(mosquitto.port)) == ("X1", "cleared")
    finally:
        for daemon in daemons.values():
            if daemon.proc.poll() is None:
                daemon.stop()


async def step(s: Scada, payload: bytes, code: str) -> tuple[tuple[object, object], ...]:
    """Publish a device event; the (code, state) of the alarm's diagnosis it caused and of the
    device headline published right after it."""
    mark = len(s.received)
    await s.client.publish(event_topic(DEVICE), payload, qos=1)
    topic = f"edge/plant1/diagnosis/{DEVICE}"
    at = await s.next_on(f"{topic}/{code}", mark)
    alarm = alarm_state(s.received[at][1])
    at = await s.next_on(topic, at)
    return alarm, alarm_state(s.received[at][1])


async def kill(s: Scada, daemon: Daemon, instance: str) -> None:
    """kill -9, and wait until the broker has published its Last Will."""
    daemon.signal(signal.SIGKILL)
    daemon.proc.wait(timeout=30)
    await s.status(instance, "offline")


def alarm_state(diagnosis: dict[str, object]) -> tuple[object, object]:
    return diagnosis["alarm_code"], diagnosis["state"]


def _ranking(device: str) -> list[str]:
    """Instances in the order they take the device over: owner first."""
    left = list(INSTANCES)
    order = []
    while left:
        top = owner(device, left)
        assert top is not None
        order.append(top)
        left.remove(top)
    return order


def handled(daemons: dict[str, Daemon], event_name: str, code: str) -> list[str]:
    """The instances whose log shows `event_name` for the device's alarm `code`."""
    return sorted(
        name
        for name, daemon in daemons.items()
        if any(
            e.get("event") == event_name
            and e.get("device_id") == DEVICE
            and e.get("alarm_code") == code
            for e in daemon.events()
        )
    )


async def test_a_nats_jetstream_instance_rebuilds_the_board_from_the_state_stream(
    nats_server: NatsServer, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """NATS keeps no retained messages; in JetStream mode the state stream holds the last
    diagnosis of every alarm and the gateways' status, and a fresh instance replays them."""

    def settings_for(instance: str) -> Settings:
        data = tmp_path / instance
        data.mkdir()
        shutil.copy(tmp_path / "data" / "kb.sqlite3", data / "kb.sqlite3")
        return make_settings(
            None,
            "nats.enabled=true",
            f'nats.servers=["{nats_server.url}"]',
            "nats.mode=jetstream",
            f"instance={instance}",
            f"data_dir={data}",
            "diagnosis.coalesce_window_s=0",
        )

    headline = f"edge.plant1.diagnosis.{DEVICE}"
    nats_event = f"edge.plant1.device.{DEVICE}.event"
    nc = await nats.connect(nats_server.url)
    try:
        live = await nc.subscribe(f"{headline}.>")
        heads = await nc.subscribe(headline)
        async with GatewayRunner(settings_for("gw-a")):
            await nc.publish(nats_event, event("alarm_raised", "X1", "critical"))
            first = Diagnosis.model_validate_json((await live.next_msg(timeout=60)).data)
            assert (first.alarm_code, first.state) == ("X1", "active")
        # gw-a stopped: a new instance with an empty memory takes the device.
        async with GatewayRunner(settings_for("gw-b")) as gw:
            assert gw.diagnosis is not None
            assert gw.diagnosis.board.get(DEVICE, "X1") == first, "replayed from the state stream"
            await nc.publish(nats_event, event("alarm_raised", "X2", "warning"))
            second = Diagnosis.model_validate_json((await live.next_msg(timeout=60)).data)
            assert (second.alarm_code, second.state) == ("X2", "active")
            await heads.next_msg(timeout=60)  # gw-a's headline (X1)
            now = Diagnosis.model_validate_json((await heads.next_msg(timeout=60)).data)
            assert (now.alarm_code, now.state) == ("X1", "active"), "X1 is still the headline"
    finally:
        await nc.close()
