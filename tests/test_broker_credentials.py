"""`edge-gateway broker add-terminal` / `add-user`: the secure broker's credentials step.

The credentials are made by the command (which hands the password to mosquitto_passwd on stdin),
then the real mosquitto runs Debian's stock configuration plus the shipped secure drop-in
(configs/mosquitto-secure.conf: TLS with a CA made here, the password file, the shipped ACL;
tests/faults/security.py moves only paths and ports). Terminal t1 logs in with the password the
command printed and its question reaches the gateway's account; a wrong password is refused.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.cli.broker import SERVICE_USERS
from tests.brokers import REPO, running_as_root
from tests.faults.bus import MqttClient, Tls
from tests.faults.security import Ca, SecureMosquitto, make_ca

pytestmark = pytest.mark.timeout(120)
QUESTION = "edge/plant1/terminal/{}/question"
QUESTION_BODY = b'{"id": "q1", "text": "What does alarm E203 on press P2 mean?"}'


def broker_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "broker", *args],
        input=stdin, capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip


def printed_password(out: str) -> str:
    found = re.search(r"(?m)^  password: (\S+)$", out)
    assert found is not None, out
    return found.group(1)


def test_the_service_accounts_are_the_acl_user_blocks() -> None:
    acl = (REPO / "configs" / "mosquitto.acl").read_text()
    assert tuple(re.findall(r"(?m)^user (\S+)$", acl)) == SERVICE_USERS


@pytest.mark.parametrize("name", ["gateway", "scada", "t:1", "t/1", "+", "#", ".t1", ""])
def test_add_terminal_refuses_what_cannot_be_a_terminal(tmp_path: Path, name: str) -> None:
    passwd = tmp_path / "passwd"
    result = broker_cli("add-terminal", name, "--password-file", str(passwd))
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith("error: ")
    assert not passwd.exists()


@pytest.fixture
def plant_ca(tmp_path: Path) -> Ca:
    return make_ca(tmp_path / "pki", "plant-ca")


def test_terminal_credentials_from_the_command_work_on_the_secure_broker(
    tmp_path: Path, plant_ca: Ca
) -> None:
    passwd = tmp_path / "etc" / "edge-gateway.passwd"
    added = broker_cli("add-terminal", "t1", "--password-file", str(passwd))
    assert added.returncode == 0, added.stderr
    t1_password = printed_password(added.stdout)
    assert "edge/<site>/terminal/t1/question" in added.stdout
    gateway_secret = tmp_path / "etc" / "mqtt-password"
    gw = broker_cli(
        "add-user", "gateway", "--password-file", str(passwd), "--password-stdin",
        "--secret-file", str(gateway_secret), stdin="gw-Secret-5e1d\n",
    )  # fmt: skip
    assert gw.returncode == 0, gw.stderr
    assert "gw-Secret-5e1d" not in gw.stdout
    assert gateway_secret.read_text() == "gw-Secret-5e1d\n"
    assert gateway_secret.stat().st_mode & 0o777 == 0o600
    # Hashed, private, the broker's own file.
    text = passwd.read_text()
    assert [line.split(":")[0] for line in text.splitlines()] == ["t1", "gateway"]
    assert t1_password not in text
    assert "gw-Secret-5e1d" not in text
    assert all(line.split(":", 1)[1].startswith("$7$") for line in text.splitlines())
    assert passwd.stat().st_mode & 0o777 == 0o600
    if running_as_root():
        assert passwd.stat().st_uid == pwd.getpwnam("mosquitto").pw_uid

    broker = SecureMosquitto(tmp_path / "mosquitto", plant_ca, passwd=passwd)
    broker.start()
    tls = Tls(plant_ca.cert)
    try:
        gateway = MqttClient(
            broker.tls_port,
            username="gateway",
            password="gw-Secret-5e1d",
            tls=tls,
            subscribe=("edge/+/terminal/+/question",),
        )
        with gateway:
            with MqttClient(broker.tls_port, username="t1", password=t1_password, tls=tls) as t1:
                # Its own question topic only: as t2 it is denied by the broker.
                t1.publish(QUESTION.format("t2"), QUESTION_BODY).wait_for_publish(5)
                t1.publish(QUESTION.format("t1"), QUESTION_BODY).wait_for_publish(5)
            # The spoofed one, denied, would have arrived before t1's own (one connection).
            gateway.wait(lambda: len(gateway.received) >= 1, 10, "t1's question")
            got = [(r.topic, r.payload) for r in gateway.snapshot()]
        assert got == [(QUESTION.format("t1"), QUESTION_BODY)]

        with pytest.raises(ConnectionRefusedError):
            MqttClient(broker.tls_port, username="t1", password="guess", tls=tls).start()

        # A new password for t1 (a lost handheld): the old one stops working on reload.
        again = broker_cli("add-terminal", "t1", "--password-file", str(passwd))
        assert again.returncode == 0, again.stderr
        new_password = printed_password(again.stdout)
        assert new_password != t1_password
        assert broker.proc is not None
        reloads = broker.log.read_text().count("Reloading config")
        os.kill(broker.proc.pid, signal.SIGHUP)  # what `systemctl reload mosquitto` sends
        deadline = time.monotonic() + 10
        while broker.log.read_text().count("Reloading config") == reloads:
            assert time.monotonic() < deadline, "mosquitto did not reload"
            time.sleep(0.05)
        with pytest.raises(ConnectionRefusedError):
            MqttClient(broker.tls_port, username="t1", password=t1_password, tls=tls).start()
        MqttClient(broker.tls_port, username="t1", password=new_password, tls=tls).start().stop()
    finally:
        broker.stop()
    assert "Denied PUBLISH" in broker.log.read_text()
