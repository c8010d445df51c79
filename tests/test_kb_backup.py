"""Backup and restore of the knowledge base through `edge-gateway kb export/import`."""

from __future__ import annotations

import shutil
import tarfile
import time
from pathlib import Path

import pytest

from gateway.bundled import default_generation_model
from gateway.cli import main
from gateway.config import Settings
from gateway.rag.chunking import Chunk
from gateway.rag.embedder import LlamaEmbedder
from gateway.rag.opening import open_knowledge_base
from gateway.rag.store import DocumentRecord

pytestmark = pytest.mark.slow
QUESTION = "What does alarm E203 on press P2 mean?"


def cli(settings: Settings, *args: str) -> int:
    return main(
        ["--set", f"data_dir={settings.data_dir}", "--set", f"cache_dir={settings.cache_dir}",
         "--set", "log.level=warning", *args]
    )  # fmt: skip


def sources(settings: Settings, vector: list[float]) -> list[tuple[int, str, str]]:
    kb, _ = open_knowledge_base(settings)
    try:
        return [(h.chunk_id, h.document, h.section) for h in kb.search(QUESTION, vector, top_k=4)]
    finally:
        kb.close()


@pytest.fixture
def settings(tmp_path: Path, model_cache: Path, demo_kb_file: Path) -> Settings:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(demo_kb_file, data / "kb.sqlite3")
    return Settings(data_dir=data, cache_dir=model_cache)


def test_export_wipe_import_returns_the_same_sources_and_keeps_unchecked_wal(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kb, model = open_knowledge_base(settings)
    with LlamaEmbedder(model, n_threads=1) as embedder:
        vector = embedder.embed([QUESTION])[0]
        note = "Alarm E999 on the demo line means the backup test wrote this."
        # Written through a connection that stays open: the change lives in the WAL only,
        # where a file copy of kb.sqlite3 would miss it.
        kb.upsert_document(
            DocumentRecord("notes/e999.txt", "E999", "text", "h1"),
            [Chunk(ordinal=0, section="E999", page=None, text=note, metadata={})],
            [embedder.embed([note])[0]],
        )
    wal = Path(f"{settings.kb_path}-wal")
    assert wal.exists()
    assert wal.stat().st_size > 0
    expected = sources(settings, vector)
    backup = tmp_path / "usb" / "kb-backup.tar"
    started = time.monotonic()
    assert cli(settings, "kb", "export", str(backup)) == 0  # while `kb` is still open
    export_s = time.monotonic() - started
    kb.close()
    print(capsys.readouterr().out)
    for path in settings.data_dir.glob("kb.sqlite3*"):
        path.unlink()
    started = time.monotonic()
    assert cli(settings, "kb", "import", str(backup)) == 0
    import_s = time.monotonic() - started
    print(f"backup {backup.stat().st_size} bytes, export {export_s:.3f} s, import {import_s:.3f} s")
    assert sources(settings, vector) == expected
    kb, _ = open_knowledge_base(settings)
    try:
        assert "notes/e999.txt" in [d.path for d in kb.list_documents()]
    finally:
        kb.close()


def test_corrupted_backup_and_other_embedding_model_are_refused(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backup = tmp_path / "kb.tar"
    assert cli(settings, "kb", "export", str(backup)) == 0
    with tarfile.open(backup) as tar:
        offset = tar.getmember("kb.sqlite3").offset_data
    damaged = tmp_path / "damaged.tar"
    raw = bytearray(backup.read_bytes())
    raw[offset + 50_000] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    before = settings.kb_path.read_bytes()
    capsys.readouterr()
    assert cli(settings, "kb", "import", str(damaged)) == 1
    assert "corrupted" in capsys.readouterr().err
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(backup.read_bytes()[:20_000])
    assert cli(settings, "kb", "import", str(truncated)) == 1
    assert capsys.readouterr().err.startswith("error:")
    # A gateway configured with another embedding model (any other GGUF will do).
    other = ["--set", f"kb.embedding_model={default_generation_model()}"]
    assert cli(settings, *other, "kb", "import", str(backup)) == 1
    err = capsys.readouterr().err
    assert "refused" in err
    assert "embedding model" in err
    assert settings.kb_path.read_bytes() == before  # nothing was touched
