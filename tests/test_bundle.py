"""Issue 17, items 2 and 3: the air-gapped bundle, installed with no network, upgraded and
rolled back, answering a question at every step.

Two bundles are built with `make bundle` from copies of this checkout: A at pyproject's version,
B the same with the version bumped. Each is installed by its install.sh into a temporary root
with no network at all (`unshare -n`: only a loopback that is down, so no package index can be
reached, and pip's configuration of this machine is ignored by the script). At each step the
installed gateway (not this checkout's) runs against a real mosquitto with the demo knowledge
base, answers a question asked with the installed `edge-gateway ask`, and reports its version in
its retained status; the journal keeps every question across the versions. A journal that
B migrated (schema 2, simulated) makes the rollback refuse before switching anything.

The bundles pack the llama-cpp-python wheel `make venv` built (kept in the wheel cache): the
portable one, a CPU backend per instruction-set level, of which the installed worker must have
loaded one (reported in `worker.started`).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway.questions.journal import SCHEMA_VERSION
from tests.brokers import Mosquitto
from tests.daemon import REPO, Daemon

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
WHEEL_CACHE = Path.home() / ".cache" / "edge-gateway" / "llama-portable"
QUESTION = "What does alarm E203 on press P2 mean?"


def project_version() -> str:
    found = re.search(r'(?m)^version = "(.+)"$', (REPO / "pyproject.toml").read_text())
    assert found is not None
    return found.group(1)


def build_bundle(tmp: Path, version: str) -> Path:
    """`make bundle` on a copy of this checkout whose pyproject says `version`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    tree = tmp / f"src-{version}"
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    pyproject = tree / "pyproject.toml"
    text, n = re.subn(
        r'(?m)^version = ".+"$', f'version = "{version}"', pyproject.read_text(), count=1
    )
    assert n == 1
    pyproject.write_text(text)
    built = subprocess.run(
        ["make", "--no-print-directory", "bundle",
         f"PYTHON={sys.executable}", f"DIST={tmp / 'dist'}", f"WHEEL_CACHE={WHEEL_CACHE}"],
        cwd=tree, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    archive = tmp / "dist" / f"edge-gateway-{version}-{platform.machine()}.tar.gz"
    assert f"wrote {archive}" in built.stdout
    unpacked = tmp / "unpacked" / version
    unpacked.mkdir(parents=True)
    shutil.unpack_archive(archive, unpacked)
    return unpacked / f"edge-gateway-{version}-{platform.machine()}"


def offline(argv: list[str]) -> list[str]:
    """`argv` in a new network namespace: no route anywhere, not even loopback."""
    return ["unshare", "--net", *argv]


class Box:
    """The temporary root a bundle is installed into, and the gateway it runs."""

    def __init__(self, root: Path, broker: Mosquitto, kb: Path) -> None:
        self.root = root
        self.broker = broker
        self.dirs = {
            "PREFIX": root / "opt/edge-gateway",
            "BINDIR": root / "usr/local/bin",
            "SYSCONFDIR": root / "etc/edge-gateway",
            "STATEDIR": root / "var/lib/edge-gateway",
            "CACHEDIR": root / "var/cache/edge-gateway",
            "UNITDIR": root / "etc/systemd/system",
            "SYSUSERSDIR": root / "usr/lib/sysusers.d",
        }
        self.kb_source = kb
        self.asked = 0

    @property
    def journal(self) -> Path:
        return self.dirs["STATEDIR"] / "journal.sqlite3"

    def script(
        self, script: Path, *args: str, network: bool = False
    ) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.root),
            "PYTHON": sys.executable,
            "EDGE_GATEWAY_NO_SYSTEMCTL": "1",  # never systemctl from a test, even under systemd
            **{k: str(v) for k, v in self.dirs.items()},
        }
        argv = [str(script), *args]
        return subprocess.run(
            offline(argv),
            env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip

    def current(self) -> str:
        return os.readlink(self.dirs["PREFIX"] / "current")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        program = self.dirs["BINDIR"] / "edge-gateway"
        return subprocess.run(
            [str(program), "--config", str(self.dirs["SYSCONFDIR"] / "gateway.toml"),
             *args],
            capture_output=True, text=True, timeout=300, check=False, cwd=self.root,
        )  # fmt: skip

    def point_at_broker(self) -> None:
        """Plant IT's one edit after the first install: the broker's port (here a test's)."""
        config = self.dirs["SYSCONFDIR"] / "gateway.toml"
        text, n = re.subn(r"(?m)^port = 1883$", f"port = {self.broker.port}", config.read_text())
        assert n == 1
        config.write_text(text)

    def answer_once(self, version: str) -> dict[str, object]:
        """Run the installed gateway, ask once, read its status; stop it cleanly."""
        if not (self.dirs["STATEDIR"] / "kb.sqlite3").exists():
            shutil.copy2(self.kb_source, self.dirs["STATEDIR"] / "kb.sqlite3")
        log = self.root / f"gateway-{version}.log"
        daemon = Daemon(
            self.dirs["SYSCONFDIR"] / "gateway.toml",
            log,
            program=(str(self.dirs["BINDIR"] / "edge-gateway"),),
            cwd=self.root,
        )
        try:
            daemon.wait_event("gateway.ready", 180)
            status = self.online_status(version)
            asked = self.cli("ask", "--json", "--timeout", "240", QUESTION)
        finally:
            code = daemon.stop()
        assert code == 0, log.read_text()[-3000:]
        assert asked.returncode == 0, asked.stderr + log.read_text()[-3000:]
        self.asked += 1
        reply: dict[str, object] = json.loads(asked.stdout)
        assert status["version"] == version
        backend = daemon.wait_event("worker.started")["cpu_backend"]
        assert re.fullmatch(r"libggml-cpu-[a-z0-9._]+\.so", str(backend)), backend
        return reply

    def online_status(self, version: str) -> dict[str, object]:
        """The gateway's retained status once it says online; the one before it (the previous
        run's `offline`, retained too) may arrive first."""
        seen: list[dict[str, object]] = []
        got = threading.Event()

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            seen.append(json.loads(msg.payload))
            if seen[-1].get("state") == "online":
                got.set()

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.on_message = on_message
        client.on_connect = lambda c, *_: c.subscribe("edge/+/gateway/+/status", qos=1)
        client.connect("127.0.0.1", self.broker.port)
        client.loop_start()
        try:
            assert got.wait(60), f"no online status in 60 s; seen {seen}"
        finally:
            client.loop_stop()
            client.disconnect()
        return next(s for s in seen if s.get("state") == "online")

    def journal_rows(self) -> list[tuple[str, str]]:
        db = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True)
        try:
            return list(db.execute("SELECT question_id, state FROM questions ORDER BY received_at"))
        finally:
            db.close()

    def set_journal_schema(self, version: int) -> None:
        db = sqlite3.connect(self.journal)
        db.execute(f"PRAGMA user_version = {version}")
        db.close()


@pytest.fixture
def box(tmp_path: Path, mosquitto: Mosquitto, demo_kb_file: Path) -> Box:
    return Box(tmp_path / "root", mosquitto, demo_kb_file)


def test_bundle_installs_offline_upgrades_and_rolls_back_answering_at_each_step(
    tmp_path: Path, box: Box
) -> None:
    assert subprocess.run(["unshare", "--net", "true"], check=False).returncode == 0, (
        "unshare --net is needed to prove the install uses no network (util-linux, as root)"
    )
    assert list(WHEEL_CACHE.glob("llama_cpp_python-*.whl")), (
        f"no llama-cpp-python wheel in {WHEEL_CACHE}: `make venv` builds it"
    )
    version_a = project_version()
    version_b = f"{version_a}.post1"
    bundle_a = build_bundle(tmp_path, version_a)
    bundle_b = build_bundle(tmp_path, version_b)

    # A, installed with no network; the command is on PATH; a question is answered.
    installed = box.script(bundle_a / "install.sh")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert box.current() == f"versions/{version_a}"
    assert box.cli("--version").stdout == f"edge-gateway {version_a}\n"
    unit = (box.dirs["UNITDIR"] / "edge-gateway.service").read_text()
    assert f"ExecStart={box.dirs['PREFIX']}/current/venv/bin/edge-gateway " in unit
    config = (box.dirs["SYSCONFDIR"] / "gateway.toml").read_text()
    assert f'data_dir = "{box.dirs["STATEDIR"]}"' in config
    box.point_at_broker()
    first = box.answer_once(version_a)
    assert first["kind"] == "answer"

    # B over A: side by side, the configuration kept, the journal continued.
    (box.dirs["SYSCONFDIR"] / "gateway.toml").write_text(
        (box.dirs["SYSCONFDIR"] / "gateway.toml").read_text() + "\n# edited by plant IT\n"
    )
    upgraded = box.script(bundle_b / "install.sh")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert box.current() == f"versions/{version_b}"
    assert os.readlink(box.dirs["PREFIX"] / "previous") == f"versions/{version_a}"
    assert "# edited by plant IT" in (box.dirs["SYSCONFDIR"] / "gateway.toml").read_text()
    assert (box.dirs["SYSCONFDIR"] / "gateway.toml.new").exists()
    assert box.cli("--version").stdout == f"edge-gateway {version_b}\n"
    second = box.answer_once(version_b)
    assert second["kind"] == "answer"

    # A journal B had migrated to a schema A does not know: the rollback refuses, B stays.
    box.set_journal_schema(SCHEMA_VERSION + 1)
    rollback = box.dirs["PREFIX"] / "current" / "install.sh"
    refused = box.script(rollback, "rollback")
    assert refused.returncode != 0
    assert f"has schema {SCHEMA_VERSION + 1}, written by a newer edge-gateway" in refused.stderr
    assert f"rollback to {version_a} refused" in refused.stderr
    assert box.current() == f"versions/{version_b}"
    box.set_journal_schema(SCHEMA_VERSION)

    # Rolled back to A: answers again; every question of every version is in the journal.
    rolled = box.script(rollback, "rollback")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert box.current() == f"versions/{version_a}"
    assert os.readlink(box.dirs["PREFIX"] / "previous") == f"versions/{version_b}"
    assert box.cli("--version").stdout == f"edge-gateway {version_a}\n"
    third = box.answer_once(version_a)
    assert third["kind"] == "answer"
    rows = box.journal_rows()
    assert [qid for qid, _ in rows] == [first["question_id"], second["question_id"],
                                        third["question_id"]]  # fmt: skip
    assert {state for _, state in rows} == {"sent"}

    listed = box.script(box.dirs["PREFIX"] / "current" / "install.sh", "list")
    assert listed.stdout.splitlines() == [
        f"{version_a} (current)",
        f"{version_b} (previous)",
    ]

    # Uninstall: programs, unit and link go; configuration and data stay unless PURGE=1.
    removed = box.script(box.dirs["PREFIX"] / "current" / "install.sh", "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not box.dirs["PREFIX"].exists()
    assert not (box.dirs["BINDIR"] / "edge-gateway").is_symlink()
    assert not (box.dirs["UNITDIR"] / "edge-gateway.service").exists()
    assert (box.dirs["SYSCONFDIR"] / "gateway.toml").exists()
    assert box.journal.exists()
