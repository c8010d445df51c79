"""Schema versions of the gateway's SQLite files, so upgrades and rollbacks never corrupt them.

Versions of the software install side by side (docs/install.md, "Upgrade and rollback") while
the journal and the knowledge base stay where they are. Each file records the schema version
that wrote it. A file of an older schema is migrated forward when a newer gateway opens it,
after a backup copy is taken next to it; a file of a newer schema is refused with a message
saying which version wrote it and where the pre-migration backup is, because an older gateway
writing into a layout it does not know would corrupt it silently.

`plan` is the decision, a plain function; the journal and the knowledge base apply it with
their own SQLite bindings (sqlite3 and apsw).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from gateway.errors import GatewayError


class SchemaTooNew(GatewayError):
    """The file was written (or migrated) by a newer gateway than this one."""


class SchemaTooOld(GatewayError):
    """The file's schema is older than any this gateway can migrate from."""


class Step(StrEnum):
    CREATE = "create"
    OPEN = "open"
    MIGRATE = "migrate"


@dataclass(frozen=True, slots=True)
class Plan:
    step: Step
    found: int | None
    """The file's schema version; None for a new file."""
    target: int


def plan(
    what: str, path: Path, found: int | None, target: int, migratable_from: frozenset[int]
) -> Plan:
    """What opening `path` at schema `found` takes for a gateway whose schema is `target`.

    Raises SchemaTooNew or SchemaTooOld with the message the operator reads.
    """
    if found is None:
        return Plan(Step.CREATE, None, target)
    if found == target:
        return Plan(Step.OPEN, found, target)
    if found > target:
        backups = sorted(str(p) for p in path.parent.glob(f"{path.name}.schema*.bak"))
        hint = (
            f" The copy taken before it was migrated is {backups[-1]}: stop the gateway and "
            "put it back in place to run this version (anything written since is then lost)."
            if backups
            else ""
        )
        raise SchemaTooNew(
            f"{what} {path} has schema {found}, written by a newer edge-gateway; this version "
            f"reads schema {target} and will not write into a layout it does not know. Run the "
            f"newer version (install.sh lists the installed ones).{hint}"
        )
    if found not in migratable_from:
        raise SchemaTooOld(
            f"{what} {path} has schema {found}, which this version cannot migrate (it migrates "
            f"from {sorted(migratable_from) or 'none'} to {target})."
        )
    return Plan(Step.MIGRATE, found, target)


def backup_path(path: Path, found: int, now: datetime | None = None) -> Path:
    """Where the copy taken before migrating a schema-`found` file goes: beside it, dated."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return path.with_name(f"{path.name}.schema{found}-{stamp}.bak")
