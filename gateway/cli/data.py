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

    failed = False
    if settings.journal_path.exists():
        try:
            journal.Journal(settings.journal_path).close()
            print(f"journal {settings.journal_path}: schema {journal.SCHEMA_VERSION}, readable")
        except GatewayError as exc:
            print(f"journal: {exc.message}", file=sys.stderr)
            failed = True
    else:
        print(f"journal {settings.journal_path}: none yet")
    if settings.kb_path.exists():
        try:
            kb, _ = open_knowledge_base(settings)
            kb.close()
            print(f"knowledge base {settings.kb_path}: schema {kb_schema.SCHEMA_VERSION}, readable")
        except GatewayError as exc:
            print(f"knowledge base: {exc.message}", file=sys.stderr)
            failed = True
    else:
        print(f"knowledge base {settings.kb_path}: none yet")
    return EXIT_FAILED if failed else EXIT_OK
