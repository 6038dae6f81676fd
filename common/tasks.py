"""Sending Celery tasks by name, so that no domain app imports the Celery app itself.

The app is made by ``config.celery`` (imported with the ``config`` package) and is Celery's
current app in every process of the service.
"""

from __future__ import annotations

from typing import Any

from celery import current_app


def send_task(name: str, *, args: list[Any], queue: str | None = None) -> None:
    """Queues task ``name``; without ``queue`` the route in CELERY_TASK_ROUTES decides."""
    if queue is None:
        current_app.send_task(name, args=args)
    else:
        current_app.send_task(name, args=args, queue=queue)
