"""Issue 6, item 7: the journal's filesystem fills up.

The journal lives on a 4 MiB tmpfs mounted by the test (the machine allows mounts as root;
where it did not, RLIMIT_FSIZE on a daemon would be the alternative the issue allows). Once
the gateway is answering, a filler file takes every free byte. Questions that then arrive
cannot be recorded: they must not be acknowledged (the broker still owns them) and must get no
reply; once the filler is removed they are answered, each once, and `PRAGMA integrity_check`
on the journal is ok.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.faults.bus import MqttClient
from tests.faults.conftest import OFF_TOPIC, record
from tests.faults.ledger import account
from tests.harness import GatewayRunner

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> int:
    """Write until the filesystem is full; returns the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as fh:
        chunk = b"\0" * 65536
        while True:
            try:
                written += fh.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 2]


async def test_full_journal_disk_leaves_questions_unacked_then_answers_them(
    mosquitto: Mosquitto, make_settings: SettingsFactory, small_fs: Path
) -> None:
    journal = small_fs / "journal.sqlite3"
    settings = make_settings(mosquitto, f"journal.path={journal}")
    before = [("t1", f"df-before-{i}") for i in range(3)]
    during = [("t1", f"df-full-{i}") for i in range(5)]
    async with GatewayRunner(settings) as gw:
        with (
            MqttClient(mosquitto.port, subscribe=("edge/plant1/terminal/+/answer/#",)) as ears,
            MqttClient(mosquitto.port) as mouth,
        ):
            for _, qid in before:
                mouth.ask("plant1", "t1", qid, OFF_TOPIC[0])
            await asyncio.to_thread(ears.wait_ids, {q for _, q in before}, 60)
            filler = small_fs / "filler"
            filled = fill(filler)
            for _, qid in during:
                mouth.ask("plant1", "t1", qid, OFF_TOPIC[1])
            await asyncio.sleep(5.0)
            while_full = {q for q in ears.question_ids() if q.startswith("df-full")}
            failures = gw.metrics.journal_write_failures
            filler.unlink()
            await asyncio.to_thread(ears.wait_ids, {q for _, q in during}, 120)
            await asyncio.sleep(1.0)
            replies = ears.snapshot()
    figures = account("journal disk full", before + during, replies, [journal])
    db = sqlite3.connect(journal)
    with contextlib.closing(db):
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    figures.extra.update(
        filler_bytes=filled,
        replies_while_full=len(while_full),
        failed_writes=failures,
        integrity_check=integrity,
    )
    record(figures)
    assert failures > 0, "the disk never filled: nothing tested"
    assert while_full == set()
    assert figures.missing == []
    assert figures.duplicated == 0
    assert figures.kinds == {"answer": len(before) + len(during)}
    assert integrity == "ok"
