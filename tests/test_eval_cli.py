"""`edge-gateway eval` (the plant's acceptance test) and `edge-gateway kb search` (hit testing),
run as an operator runs them, on the demo knowledge base and the real models."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.evaluation.cases import CaseFileError, load_cases

pytestmark = pytest.mark.slow

TINY_SET = [
    {
        "id": "torque",
        "question": "What torque do I tighten the P2 pressure filter bowl to?",
        "expected_document": "press-p2-manual.md",
        "key_facts": ["40 Nm"],
    },
    {
        "id": "battery",
        "question": "How often must the encoder backup battery in R1 be changed?",
        "expected_document": "robot-r1-notes.txt",
        "key_facts": ["2 years", "two years"],
    },
    {
        # In-domain by its label, but nothing in it can be retrieved: a wrong fallback.
        "id": "gibberish",
        "question": "Qwxz plorf vrumble?",
        "expected_document": "press-p2-manual.md",
        "key_facts": ["160 bar"],
    },
    {
        "id": "bread",
        "question": "What is a good recipe for sourdough bread?",
        "expected_document": None,
        "key_facts": [],
    },
]


def cli(data: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "--set",
            f"data_dir={data}",
            "--set",
            f"cache_dir={cache}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def data_dir(tmp_path: Path, demo_kb_file: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(demo_kb_file, data / "kb.sqlite3")
    return data


def test_eval_prints_and_writes_correct_totals(
    tmp_path: Path, data_dir: Path, model_cache: Path
) -> None:
    questions = tmp_path / "set.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in TINY_SET), encoding="utf-8")
    out = tmp_path / "out"
    done = cli(
        data_dir, model_cache, "eval", str(questions), "--mode", "extractive", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "[4/4] bread: off-topic fell back" in done.stderr
    (gibberish,) = [x for x in done.stderr.splitlines() if x.startswith("[3/4] gibberish:")]
    assert "WRONG-FALLBACK" in gibberish
    lines = {line.split("  ")[1].strip(): line for line in done.stdout.splitlines() if "  " in line}
    assert "2/3 (0.67)" in lines["expected document among sources"]
    assert "2/3 (0.67)" in lines["key fact in the quotes"]
    assert "1/3 (0.33)" in lines["in-domain questions that fell back (wrong)"]
    assert "1/1 (1.00)" in lines["off-topic questions that fell back"]
    assert "0/2 (0.00)" in lines["answers with an unsupported statement"]
    totals = json.loads((out / "extractive" / "totals.json").read_text())
    assert totals["in_domain"] == 3
    assert totals["off_topic"] == 1
    assert totals["wrong_fallbacks"] == {"hits": 1, "of": 3}
    assert totals["off_topic_fallbacks"] == {"hits": 1, "of": 1}
    assert totals["fact_in_quotes"] == {"hits": 2, "of": 3}
    rows = [json.loads(x) for x in (out / "extractive" / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["torque", "battery", "gibberish", "bread"]
    assert rows[0]["answer"]["check"]["mode"] == "extractive"
    assert "40 Nm" in rows[0]["answer"]["text"]


def test_eval_refuses_a_broken_question_file_with_its_line(
    tmp_path: Path, data_dir: Path, model_cache: Path
) -> None:
    questions = tmp_path / "bad.jsonl"
    questions.write_text(json.dumps(TINY_SET[0]) + "\n{not json\n", encoding="utf-8")
    done = cli(data_dir, model_cache, "eval", str(questions))
    assert done.returncode == 1
    assert f"{questions}:2:" in done.stderr


def test_load_cases_names_the_line_of_each_problem(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(TINY_SET[0]) + "\n" + json.dumps(TINY_SET[0]) + "\n")
    with pytest.raises(CaseFileError, match=r":2: id 'torque' appears twice"):
        load_cases(path)
    path.write_text(json.dumps({"question": "x", "key_facts": "40 Nm"}) + "\n")
    with pytest.raises(CaseFileError, match=r":1: "):
        load_cases(path)
    path.write_text("# only a comment\n")
    with pytest.raises(CaseFileError, match="no questions"):
        load_cases(path)


def test_kb_search_shows_chunks_scores_and_quotes_without_the_model(
    data_dir: Path, model_cache: Path
) -> None:
    done = cli(data_dir, model_cache, "kb", "search", "What torque for the P2 filter bowl?")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("best similarity ")
    assert ": answered" in done.stdout.splitlines()[0]
    assert done.stdout.count("\n[") == 6  # kb.top_k chunks
    assert "quote: " in done.stdout
    assert "40 Nm" in done.stdout
    assert "worker.started" not in done.stderr  # no model worker: embeddings only


def test_kb_calibrate_takes_an_eval_question_set(
    tmp_path: Path, data_dir: Path, model_cache: Path
) -> None:
    questions = tmp_path / "set.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in TINY_SET), encoding="utf-8")
    done = cli(data_dir, model_cache, "kb", "calibrate", str(questions))
    assert done.returncode == 0, done.stderr
    counts = dict(re.findall(r"^(in-domain|off-topic)\s+n=\s*(\d+)", done.stdout, re.M))
    # 3 in-domain from the set; its 1 off-topic question beside the 32 built-in ones.
    assert counts == {"in-domain": "3", "off-topic": "33"}
    assert "recommended kb.similarity_threshold = " in done.stdout
