"""Embedded PostgreSQL and Redis for a test session run without DATABASE_URL / REDIS_URL.

Loaded with ``-p`` (pyproject's addopts), so that its hook runs before pytest-django's, which
imports the settings that read those URLs. CI sets both, and nothing is started then; otherwise
the servers are stopped when the session ends (config/embedded.py).
"""

from __future__ import annotations

import base64
import os
import secrets
from contextlib import ExitStack

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    if early_config.known_args_namespace.help or early_config.known_args_namespace.version:
        return
    from config import embedded

    # The suite is a local run (the settings' SCAIECHO_ENV), also against CI's servers; the
    # processes it starts inherit that.
    os.environ.setdefault("SCAIECHO_ENV", "local")
    # The suite connects as the server's superuser (CI's postgres, the embedded one's), which
    # can alter anything: the processes it starts warn about their role instead of refusing.
    # tests/operations/integration/test_database_roles.py runs the refusal itself.
    os.environ.setdefault("DATABASE_ROLE_CHECK", "warn")
    # Most tests enroll the pyannote sample's speaker A many times in one tenant, which the
    # default duplicate policy would hold for review; tests of the hold set "review" themselves.
    os.environ.setdefault("PREFLIGHT_DUPLICATE_POLICY", "warn")
    # One key-encryption key for the session and every process it starts, so that no test
    # writes a key file into the developer's data directory.
    os.environ.setdefault(
        "DATA_KEY_ENCRYPTION_KEY", base64.b64encode(secrets.token_bytes(32)).decode()
    )
    servers = ExitStack()
    servers.enter_context(embedded.running())
    early_config.add_cleanup(servers.close)
