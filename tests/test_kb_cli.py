"""`edge-gateway ingest` and `kb ...` as an operator runs them, on a real knowledge base."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def cli(tmp: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--set", f"data_dir={tmp / 'data'}",
         "--set", f"cache_dir={cache}", *args],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip


def test_ingest_list_stats_calibrate_remove(tmp_path: Path, model_cache: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "configs" / "demo-kb", docs)

    first = cli(tmp_path, model_cache, "ingest", str(docs))
    assert first.returncode == 0, first.stderr
    assert "4 added" in first.stdout

    again = cli(tmp_path, model_cache, "ingest", str(docs))
    assert again.returncode == 0
    assert "4 unchanged" in again.stdout

    manual = docs / "press-p2-manual.md"
    manual.write_text(manual.read_text() + "\n\n## E999 Test alarm\n\nOnly for this test.\n")
    changed = cli(tmp_path, model_cache, "ingest", str(docs))
    assert "1 replaced" in changed.stdout
    assert "3 unchanged" in changed.stdout

    listing = cli(tmp_path, model_cache, "kb", "list")
    assert listing.returncode == 0
    assert "4 documents" in listing.stdout

    stats = cli(tmp_path, model_cache, "kb", "stats")
    assert "bert/all-MiniLM-L6-v2" in stats.stdout

    calibration = cli(
        tmp_path, model_cache, "kb", "calibrate", str(docs / "calibration-questions.txt")
    )
    assert calibration.returncode == 0, calibration.stderr
    assert "recommended kb.similarity_threshold" in calibration.stdout

    (docs / "robot-r1-notes.txt").unlink()
    removed = cli(tmp_path, model_cache, "kb", "remove", "--missing")
    assert "robot-r1-notes.txt" in removed.stdout
    gone = cli(tmp_path, model_cache, "kb", "remove", str(docs / "no-such-file.md"))
    assert gone.returncode == 1
    assert "3 documents" in cli(tmp_path, model_cache, "kb", "list").stdout


def test_ingest_reports_a_bad_file_and_keeps_the_others(tmp_path: Path, model_cache: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Pump\n\nThe pump P7 alarm E777 means low suction.\n")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    result = cli(tmp_path, model_cache, "ingest", str(docs))
    assert result.returncode == 1
    assert "failed" in result.stdout
    assert "broken.pdf" in result.stdout
    assert "1 added" in result.stdout
