"""SIGHUP: re-read the configuration and apply what can change without a restart.

Reloadable (read per question or per search, nothing holds on to them): the similarity
threshold, the fallback text, top_k, max_tokens and temperature, the [answer] section, the log
level, and the
knowledge-base path (the new file is opened before the old one is let go). Everything else
(broker, topics, worker model and limits, journal, metrics listener...) is wired into objects
built at start; a change there is reported as "needs restart" and not applied, so the running
gateway always matches one consistent configuration: the old one plus the applied keys.

An invalid new configuration changes nothing; the errors are logged with their key paths.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from gateway.config import ConfigFileError, Settings
from gateway.logging import configure_logging, get_logger
from gateway.questions.answering import AnswerPolicy

if TYPE_CHECKING:
    from gateway.ops.view import GatewayView

log = get_logger(__name__)

RELOADABLE = frozenset(
    {
        "kb.similarity_threshold",
        "kb.fallback_text",
        "kb.top_k",
        "kb.weak_similarity",
        "kb.path",
        "worker.max_tokens",
        "worker.temperature",
        "answer.mode",
        "answer.quotes",
        "answer.quote_max_chars",
        "answer.prompt_budget_tokens",
        "answer.support_threshold",
        "answer.repeat_penalty",
        "log.level",
    }
)


def flatten(model: BaseModel) -> dict[str, Any]:
    """Dotted key -> value; secrets stay SecretStr (compared by value, printed masked)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(f"{prefix}{name}.", getattr(value, name))
        else:
            out[prefix.rstrip(".")] = value

    walk("", model)
    return out


def diff(old: Settings, new: Settings) -> dict[str, tuple[Any, Any]]:
    before, after = flatten(old), flatten(new)
    return {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}


def effective(old: Settings, new: Settings, keys: set[str]) -> Settings:
    """`old` with only `keys` taken from `new`."""
    updates: dict[str, dict[str, Any]] = {}
    for key in keys:
        section, _, name = key.partition(".")
        updates.setdefault(section, {})[name] = getattr(getattr(new, section), name)
    return old.model_copy(
        update={
            section: getattr(old, section).model_copy(update=values)
            for section, values in updates.items()
        }
    )


def _show(value: Any) -> Any:
    return value if isinstance(value, bool | int | float | type(None)) else str(value)


async def reload_settings(gateway: GatewayView, load: Callable[[], Settings]) -> Mapping[str, Any]:
    """Apply a reload to a running gateway; returns what the log event says."""
    old = gateway.settings
    try:
        new = load()
    except ValidationError as exc:
        errors = [
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()
        ]
        log.error("config.reload_failed", errors=errors, kept="previous configuration")
        return {"errors": errors}
    except (ConfigFileError, ValueError, OSError) as exc:
        log.error("config.reload_failed", errors=[str(exc)], kept="previous configuration")
        return {"errors": [str(exc)]}
    changes = diff(old, new)
    apply = {k for k in changes if k in RELOADABLE}
    restart = sorted(k for k in changes if k not in RELOADABLE)
    candidate = effective(old, new, apply)
    failed: dict[str, str] = {}
    if "kb.path" in apply and gateway.kb is not None:
        try:
            await gateway.kb.reopen(candidate)
        except Exception as exc:
            failed["kb.path"] = str(exc)
            apply.discard("kb.path")
            candidate = effective(old, new, apply)
    if gateway.kb is not None:
        gateway.kb.top_k = candidate.kb.top_k
    if gateway.answerer is not None:
        gateway.answerer.policy = AnswerPolicy.from_settings(candidate)
        if gateway.answerer.cache is not None and apply - {"log.level"}:
            # Another KB file may carry the same version number, and other top_k, max_tokens
            # or temperature would have produced other answers: start over.
            gateway.answerer.cache.clear()
    if "log.level" in apply:
        configure_logging(candidate.log.level, candidate.log.format)
    gateway.settings = candidate
    event = {
        "changed": {k: [_show(a), _show(b)] for k, (a, b) in sorted(changes.items())},
        "applied": sorted(apply),
        "needs_restart": restart,
        "failed": failed,
    }
    log.info("config.reloaded", **event)
    return event
