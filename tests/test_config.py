"""Configuration precedence, validation with key paths, secret masking."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import load_settings, merge_overrides

REPO = Path(__file__).resolve().parent.parent


def test_shipped_config_is_valid() -> None:
    settings = load_settings(REPO / "configs" / "gateway.toml")
    assert settings.mqtt.protocol == "5"


def test_precedence_cli_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "g.toml"
    conf.write_text('site = "file"\n[mqtt]\nport = 1000\nhost = "filehost"\n')
    monkeypatch.setenv("EDGE_GATEWAY_MQTT__PORT", "2000")
    settings = load_settings(conf, merge_overrides(["mqtt.host=clihost"]))
    assert (settings.site, settings.mqtt.port, settings.mqtt.host) == ("file", 2000, "clihost")


def test_every_error_is_reported_with_its_key_path(tmp_path: Path) -> None:
    conf = tmp_path / "g.toml"
    conf.write_text('[mqtt]\nport = 0\nprotocol = "4"\n[worker]\nn_ctx = 1\nbogus = 1\n')
    with pytest.raises(ValidationError) as info:
        load_settings(conf)
    paths = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
    assert {"mqtt.port", "mqtt.protocol", "worker.n_ctx", "worker.bogus"} <= paths


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )


def test_config_check_masks_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2-very-secret\n")
    result = run_cli("--set", "mqtt.password=hunter2-very-secret", "config", "check")
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert json.loads(result.stdout)["mqtt"]["password"] == "**********"


def test_config_check_fails_with_key_paths() -> None:
    result = run_cli("--set", "mqtt.port=99999", "--set", "kb.top_k=0", "config", "check")
    assert result.returncode == 2
    assert "mqtt.port" in result.stderr
    assert "kb.top_k" in result.stderr


def test_missing_config_file_is_a_clear_error() -> None:
    result = run_cli("--config", "/nonexistent/g.toml", "config", "check")
    assert result.returncode == 2
    assert "not found" in result.stderr
