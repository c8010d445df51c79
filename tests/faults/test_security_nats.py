"""Issue 6, item 9 (NATS): the shipped per-user permissions (configs/nats-server.conf).

The server runs the shipped file (moved to a free port and the test's store, plus one test-only
`spy` user that may subscribe to everything). The gateway connects as `gateway` with its
password from a file and `nats.reply_prefixes = ["_INBOX.{terminal_id}."]`, matching the
per-terminal inbox prefixes the server config grants. Terminal t1 attacks t2 and SCADA.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from models.health import Health, Status
from tests.brokers import REPO, NatsServer, free_port
from tests.conftest import SettingsFactory
from tests.daemon import Daemon
from tests.faults.conftest import OFF_TOPIC, record, write_gateway_config

pytestmark = pytest.mark.timeout(300)
SHIPPED = REPO / "configs" / "nats-server.conf"
PASSWORDS = {"gateway": "change-me-gateway", "t1": "change-me-t1", "t2": "change-me-t2"}
SPY_PASSWORD = "spy-Secret-91c2"


def server_conf(workdir: Path, port: int) -> Path:
    text = SHIPPED.read_text()
    text, n = re.subn(r"(?m)^listen: .*$", f"listen: 127.0.0.1:{port}", text)
    assert n == 1
    text, n = re.subn(r'store_dir: "[^"]*"', f'store_dir: "{workdir}/js"', text)
    assert n == 1
    text, n = re.subn(
        r"users: \[",
        f"users: [\n        {{user: spy, password: {SPY_PASSWORD}, "
        'permissions: {subscribe: ">"}}',
        text,
    )
    assert n == 1
    conf = workdir / "nats-server.conf"
    workdir.mkdir(parents=True, exist_ok=True)
    conf.write_text(text)
    return conf


class Collector:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.errors: list[str] = []

    async def on_msg(self, msg: Msg) -> None:
        self.messages.append((msg.subject, msg.data))

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    def replies(self) -> dict[str, dict[str, object]]:
        out = {}
        for _, data in self.messages:
            try:
                body = json.loads(data)
            except ValueError:
                continue
            if isinstance(body, dict) and "question_id" in body:
                out[str(body["question_id"])] = body
        return out


async def connect(url: str, user: str | None, sink: Collector, **kw: object) -> nats.NATS:
    options: dict[str, object] = {"error_cb": sink.on_error, "allow_reconnect": False, **kw}
    if user is not None:
        options |= {"user": user, "password": PASSWORDS.get(user, SPY_PASSWORD)}
    return await nats.connect(url, **options)


async def test_nats_permissions_keep_terminals_apart(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    port = free_port()
    server = NatsServer(tmp_path / "nats", port=port, conf=server_conf(tmp_path / "nats", port))
    server.start()
    settings = make_settings(None)
    secret = tmp_path / "gateway.password"
    secret.write_text(PASSWORDS["gateway"] + "\n")
    config = write_gateway_config(
        tmp_path,
        settings,
        "[mqtt]\nenabled = false\n"
        f'[nats]\nenabled = true\nservers = ["{server.url}"]\nuser = "gateway"\n'
        f'password_file = "{secret}"\nreply_prefixes = ["_INBOX.{{terminal_id}}."]\n'
        "[worker]\nmax_tokens = 8\n[health]\ninterval_s = 0.5\n",
    )
    log = tmp_path / "gw.log"
    daemon = Daemon(config, log, overrides=("log.level=debug",))
    spy, t1, t2 = Collector(), Collector(), Collector()
    refused: dict[str, str] = {}
    try:
        for who, user, password in (("anonymous", None, None), ("wrong password", "t1", "x")):
            kw = {} if user is None else {"user": user, "password": password}
            with pytest.raises(nats.errors.Error) as info:
                await nats.connect(
                    server.url, allow_reconnect=False, max_reconnect_attempts=0, **kw
                )
            refused[who] = str(info.value)
        await asyncio.to_thread(daemon.wait_event, "gateway.ready")
        spy_nc = await connect(server.url, "spy", spy)
        await spy_nc.subscribe(">", cb=spy.on_msg)
        nc1 = await connect(server.url, "t1", t1, inbox_prefix="_INBOX.t1")
        nc2 = await connect(server.url, "t2", t2, inbox_prefix="_INBOX.t2")
        await nc2.subscribe("edge.plant1.answer.t2", cb=t2.on_msg)
        await nc1.subscribe("edge.plant1.answer.t1", cb=t1.on_msg)
        for stolen in ("edge.plant1.answer.t2", "edge.plant1.answer.*", ">", "_INBOX.t2.>"):
            await nc1.subscribe(stolen, cb=t1.on_msg)  # refused by the server
        await nc1.flush()
        await spy_nc.flush()
        # Request/reply on t1's own inbox works.
        own = await nc1.request(
            "edge.plant1.question.t1",
            json.dumps({"id": "t1-own", "text": OFF_TOPIC[0]}).encode(),
            timeout=60,
        )
        assert json.loads(own.data)["kind"] == "answer"
        await nc2.publish(
            "edge.plant1.question.t2", json.dumps({"id": "t2-own", "text": OFF_TOPIC[1]}).encode()
        )
        # t1 publishes as t2 (denied), and asks for replies into t2's and SCADA's subjects.
        await nc1.publish(
            "edge.plant1.question.t2", json.dumps({"id": "spoof", "text": OFF_TOPIC[2]}).encode()
        )
        hostile = [
            "edge.plant1.answer.t2",
            "_INBOX.t2.stolen",
            "edge.plant1.diagnosis.P2",
            "edge.plant1.gateway.gw1.status",
        ]
        for i, reply in enumerate(hostile):
            body = json.dumps({"id": f"hostile-{i}", "text": OFF_TOPIC[3]}).encode()
            await nc1.publish("edge.plant1.question.t1", body, reply=reply)
        # Last, one plain question from each terminal: once the spy (one subscription to
        # everything) has both answers, whatever was published before them has reached it,
        # misrouted answers and a spoofed question included.
        for nc, terminal in ((nc1, "t1"), (nc2, "t2")):
            body = json.dumps({"id": f"{terminal}-last", "text": OFF_TOPIC[4]}).encode()
            await nc.publish(f"edge.plant1.question.{terminal}", body)
        async with asyncio.timeout(60):
            while not (  # noqa: ASYNC110 - polling collectors fed by nats-py callbacks
                {f"hostile-{i}" for i in range(len(hostile))} <= set(t1.replies())
                and {"t2-own", "t2-last"} <= set(t2.replies())
                and {"t1-last", "t2-last"} <= set(spy.replies())
            ):
                await asyncio.sleep(0.05)
        for nc in (nc1, nc2, spy_nc):
            await nc.close()
    finally:
        code = await asyncio.to_thread(daemon.stop)
        server.stop()
    assert code == 0
    t1_replies = t1.replies()
    assert {t1_replies[f"hostile-{i}"]["code"] for i in range(len(hostile))} == {
        "forbidden_response_topic"
    }
    assert {s for s, _ in t1.messages} == {"edge.plant1.answer.t1"}
    assert set(t2.replies()) == {"t2-own", "t2-last"}
    violations = [e for e in t1.errors if "permissions violation" in e.lower()]
    allowed = re.compile(
        r"^(edge\.plant1\.question\.t[12]|edge\.plant1\.answer\.t[12]|_INBOX\.t1\..+|"
        r"edge\.plant1\.gateway\.gw1\.(status|health))$"
    )
    elsewhere = [s for s, _ in spy.messages if not allowed.match(s)]
    # One of the hostile reply subjects is the status subject: it and the health subject carry
    # only the gateway's own Status and Health, so an answer sent there fails here.
    gateway_models: dict[str, type[Status] | type[Health]] = {
        "edge.plant1.gateway.gw1.status": Status,
        "edge.plant1.gateway.gw1.health": Health,
    }
    not_gateway_payloads = []
    for subject, data in spy.messages:
        if subject in gateway_models:
            try:
                gateway_models[subject].model_validate_json(data)
            except ValueError:
                not_gateway_payloads.append(f"{subject}: {data[:200]!r}")
    spoofed = [s for s, d in spy.messages if b"spoof" in d]
    answers_for_t2 = [
        json.loads(d).get("question_id") for s, d in spy.messages if s == "edge.plant1.answer.t2"
    ]
    log_text = log.read_text()
    leaked = [u for u, p in PASSWORDS.items() if p in log_text]
    record(
        f"FIGURES nats security (shipped per-user permissions): refused connections {refused}; "
        f"t1 permission violations {len(violations)} (4 subscriptions + 1 publish as t2); t1 "
        f"received {len(t1.messages)} messages, all on its own answer subject; hostile reply "
        f"subjects refused {len(hostile)}/{len(hostile)}; t2 received {len(t2.messages)} (its own "
        f"answers); spoofed question reaching subscribers {len(spoofed)}; publishes anywhere else "
        f"{len(elsewhere)}; secrets in gateway log {len(leaked)} ({len(log_text)} bytes scanned)"
    )
    assert len(violations) >= 5, t1.errors
    assert spoofed == []
    assert answers_for_t2 == ["t2-own", "t2-last"]  # t2's own two, in order, nothing of t1's
    assert elsewhere == [], elsewhere
    assert not_gateway_payloads == [], not_gateway_payloads
    assert leaked == []
    # What the server answered each refused connection (its -ERR), not the test's own labels.
    assert {who: "authorization violation" in why.lower() for who, why in refused.items()} == {
        "anonymous": True,
        "wrong password": True,
    }, refused
