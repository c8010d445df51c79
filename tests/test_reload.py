"""The settings diff behind SIGHUP: what changed, what is applied, what needs a restart."""

from __future__ import annotations

from pydantic import SecretStr

from gateway.config import Settings
from gateway.ops.reload import RELOADABLE, diff, effective


def test_diff_lists_changed_keys_and_compares_secrets_by_value() -> None:
    old = Settings(mqtt={"password": "a"}, kb={"fallback_text": "x"})
    new = Settings(mqtt={"password": "b", "port": 1884}, kb={"fallback_text": "y"})
    changes = diff(old, new)
    assert set(changes) == {"mqtt.password", "mqtt.port", "kb.fallback_text"}
    assert isinstance(changes["mqtt.password"][1], SecretStr)
    assert str(changes["mqtt.password"][1]) == "**********"  # never printed in clear
    assert diff(old, old) == {}


def test_effective_takes_only_the_applied_keys_from_the_new_settings() -> None:
    old = Settings(kb={"fallback_text": "x", "similarity_threshold": 0.3}, mqtt={"port": 1883})
    new = Settings(kb={"fallback_text": "y", "similarity_threshold": 0.5}, mqtt={"port": 1884})
    applied = {k for k in diff(old, new) if k in RELOADABLE}
    result = effective(old, new, applied)
    assert result.kb.fallback_text == "y"
    assert result.kb.similarity_threshold == 0.5
    assert result.mqtt.port == 1883  # needs a restart: not applied
    assert old.kb.fallback_text == "x"  # the old object is untouched
