"""`edge-gateway check-data`: can this version open the journal and the knowledge base?

install.sh asks the version it would roll back to before switching, so a journal or knowledge
base that a newer version migrated is refused while the newer version still runs, with the
message naming the backup taken before the migration, instead of at the unit's next start.
Nothing is created: a file that does not exist yet is reported as such.
"""

from __future__ import annotations

import sys

from gateway.cli.exits import EXIT_FAILED, EXIT_OK
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.questions import journal
from gateway.rag import schema as kb_schema


def check_data(settings: Settings) -> int:
    from gateway.rag.opening import open_knowledge_base

    def open_journal() -> None:
        journal.Journal(settings.journal_path).close()

    def open_kb() -> None:
        open_knowledge_base(settings)[0].close()

    failed = False
    files = (
        ("journal", settings.journal_path, journal.SCHEMA_VERSION, open_journal),
        ("knowledge base", settings.kb_path, kb_schema.SCHEMA_VERSION, open_kb),
    )
    for what, path, version, opener in files:
        if not path.exists():
            print(f"{what} {path}: none yet")
            continue
        try:
            opener()
        except GatewayError as exc:
            print(f"{what}: {exc.message}", file=sys.stderr)
            failed = True
        else:
            print(f"{what} {path}: schema {version}, readable")
    return EXIT_FAILED if failed else EXIT_OK
