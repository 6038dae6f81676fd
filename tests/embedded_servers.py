"""Embedded PostgreSQL and Redis for a test session run without DATABASE_URL / REDIS_URL.

Loaded with ``-p`` (pyproject's addopts), so that its hook runs before pytest-django's, which
imports the settings that read those URLs. CI sets both, and nothing is started then; otherwise
the servers are stopped when the session ends (config/embedded.py).
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    if early_config.known_args_namespace.help or early_config.known_args_namespace.version:
        return
    from config import embedded

    servers = ExitStack()
    servers.enter_context(embedded.running())
    early_config.add_cleanup(servers.close)
