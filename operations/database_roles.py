"""Where the long-running processes check their database role (``common/database_roles.py``).

Every one checks before it serves: the API in its ASGI lifespan startup (uvicorn exits when it
fails), every Celery worker (the orchestrator's and each node's) at ``worker_init``;
``run_service`` and ``run_node`` check before they start anything. One-off management commands
(``migrate``, ``create_api_key``, ...) are not checked.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.db import DEFAULT_DB_ALIAS, connections

from common.database_roles import check_database_role


class DatabaseRoleLifespan:
    """The ASGI app of the ``lifespan`` scope: startup fails when the role check refuses."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await database_sync_to_async(check_database_role)("api")
                except Exception as refusal:  # a refusal, or a check that cannot run
                    await send({"type": "lifespan.startup.failed", "message": str(refusal)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def check_worker_role(sender: Any, **kwargs: Any) -> None:
    """``worker_init`` receiver. Celery logs and ignores an exception a receiver raises, so a
    refusal (or a check that cannot run) leaves as SystemExit."""
    try:
        check_database_role(f"worker {sender.hostname}")
    except Exception as refusal:
        raise SystemExit(str(refusal)) from refusal
    finally:
        # The prefork pool is forked after this: no child inherits the connection.
        connections[DEFAULT_DB_ALIAS].close()
