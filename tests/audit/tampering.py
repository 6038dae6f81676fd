"""What an attacker holding the audit table owner's rights could do to the trail (tests only)."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection

from audit.chain import chain_rows, event_hash

TRIGGER = "audit_auditevent_immutable_rows"


def tamper(*statements: tuple[str, list[Any]]) -> None:
    """Runs ``statements`` with the immutability trigger off, then switches it back on."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # flush the test's pending FK checks
        cursor.execute(f"ALTER TABLE audit_auditevent DISABLE TRIGGER {TRIGGER}")
        for sql, params in statements:
            cursor.execute(sql, params)
        cursor.execute(f"ALTER TABLE audit_auditevent ENABLE ALWAYS TRIGGER {TRIGGER}")


def cut_tail(after_seq: int) -> None:
    """Removes every event after ``after_seq``: the chain that is left still links up."""
    tamper(("DELETE FROM audit_auditevent WHERE seq > %s", [after_seq]))


def rewrite_from(seq: int, details: dict[str, Any], prev_hash: str | None = None) -> None:
    """Gives event ``seq`` new details (and link, with ``prev_hash``) and recomputes its hash
    and every later one, so that every link of the chain holds again."""
    rows = list(chain_rows(seq))
    prev_hash = prev_hash or rows[0].prev_hash
    statements = []
    for index, row in enumerate(rows):
        new_details = details if index == 0 else row.details
        digest = event_hash(
            prev_hash=prev_hash,
            occurred_at=row.occurred_at,
            tenant_id=str(row.tenant_id) if row.tenant_id else None,
            action=row.action,
            actor=row.actor,
            speaker_id=str(row.speaker_id) if row.speaker_id else None,
            details=new_details,
        )
        statements.append(
            (
                "UPDATE audit_auditevent SET details = %s, prev_hash = %s, hash = %s "
                "WHERE seq = %s",
                [json.dumps(new_details), prev_hash, digest, row.seq],
            )
        )
        prev_hash = digest
    tamper(*statements)
