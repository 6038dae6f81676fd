"""Pool settings as a fresh process reads them: a bad one stops the process at start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.live import ROOT

START = "import django; django.setup(); print('started')"


def run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NODE_POOL")}
    clean.update(DJANGO_SETTINGS_MODULE="config.settings", SCAIECHO_ENV="local")
    return subprocess.run(
        command, env={**clean, **env}, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_a_process_starts_with_pools_it_can_use():
    process = run([sys.executable, "-c", START], NODE_POOLS="eu=acme;us=initech", NODE_POOL="us")

    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "started"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NODE_POOLS": "eu:acme"}, "NODE_POOLS: 'eu:acme' is not pool=tenant,tenant"),
        ({"NODE_POOLS": "eu=acme;us=acme"}, "tenant acme is in pools eu and us"),
        ({"NODE_POOLS": "eu=acme", "NODE_POOL": "us"}, "NODE_POOL 'us' is not a pool"),
    ],
    ids=["syntax", "tenant-twice", "unknown-node-pool"],
)
def test_a_bad_pool_setting_is_refused_at_start(env, message):
    process = run([sys.executable, "-c", START], **env)

    assert process.returncode != 0
    assert "InvalidNodePools" in process.stderr and message in process.stderr


def test_a_node_of_an_unknown_pool_refuses_to_start():
    process = run(
        [sys.executable, "manage.py", "run_node", "node-x"], NODE_POOLS="eu=acme", NODE_POOL="asia"
    )

    assert process.returncode != 0
    assert "NODE_POOL 'asia' is not a pool of NODE_POOLS (pools: default, eu)" in process.stderr
