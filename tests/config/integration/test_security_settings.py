"""The settings as a fresh process reads them: production (the default) refuses the
development secret key and defaults to secure cookies, HSTS and short console sessions;
SCAIECHO_ENV=local relaxes what plain HTTP on one's own machine needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.live import ROOT

READ = """
import json
from django.conf import settings
names = ["SCAIECHO_ENV", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS",
         "SECURE_PROXY_SSL_HEADER", "SESSION_COOKIE_AGE", "SESSION_EXPIRE_AT_BROWSER_CLOSE",
         "TRUSTED_PROXY_HEADER", "TRUSTED_PROXIES"]
print(json.dumps({name: getattr(settings, name) for name in names}))
"""
A_KEY = "k" * 20 + "-a-real-deployment-key-0123456789"


def settings_of(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SCAIECHO_ENV", "DJANGO_SECRET_KEY", "TRUSTED_PROXY"))
    }
    clean["DJANGO_SETTINGS_MODULE"] = "config.settings"
    return subprocess.run(
        [sys.executable, "-c", READ],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def read(**env: str) -> dict:
    process = settings_of(**env)
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"SCAIECHO_ENV": "production"},
        {"DJANGO_SECRET_KEY": "insecure-development-key-change-me"},
        {"DJANGO_SECRET_KEY": "too-short"},
    ],
    ids=["unset", "production", "the-development-key", "short"],
)
def test_production_refuses_to_start_without_a_secret_key_of_its_own(env):
    process = settings_of(**env)

    assert process.returncode != 0
    assert "ImproperlyConfigured" in process.stderr
    assert "DJANGO_SECRET_KEY" in process.stderr and "SCAIECHO_ENV=local" in process.stderr


def test_an_unknown_environment_is_refused():
    process = settings_of(SCAIECHO_ENV="staging", DJANGO_SECRET_KEY=A_KEY)

    assert process.returncode != 0 and "SCAIECHO_ENV" in process.stderr


def test_production_defaults_to_secure_cookies_hsts_and_short_sessions():
    values = read(DJANGO_SECRET_KEY=A_KEY)

    assert values["SCAIECHO_ENV"] == "production"
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SECURE_HSTS_SECONDS"] >= 180 * 24 * 3600
    assert values["SESSION_COOKIE_AGE"] == 8 * 3600
    assert values["SESSION_EXPIRE_AT_BROWSER_CLOSE"] is True
    # No proxy is trusted unless one is named: neither for the address nor for HTTPS.
    assert values["TRUSTED_PROXY_HEADER"] == ""
    assert values["SECURE_PROXY_SSL_HEADER"] is None


def test_a_local_run_works_over_plain_http_with_the_development_key():
    values = read(SCAIECHO_ENV="local")

    assert values["SESSION_COOKIE_SECURE"] is False
    assert values["CSRF_COOKIE_SECURE"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0


def test_a_trusted_proxy_also_says_whether_the_request_came_over_https():
    values = read(
        DJANGO_SECRET_KEY=A_KEY,
        TRUSTED_PROXY_HEADER="X-Forwarded-For",
        TRUSTED_PROXIES="10.0.0.0/8, 2001:db8::/32",
    )

    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert values["TRUSTED_PROXIES"] == ["10.0.0.0/8", "2001:db8::/32"]


@pytest.mark.parametrize(
    "env",
    [{"TRUSTED_PROXIES": "10.0.0.0/8,not-a-network"}, {"TRUSTED_PROXY_COUNT": "0"}],
    ids=["bad-network", "no-hops"],
)
def test_a_malformed_proxy_setting_is_refused_at_start(env):
    process = settings_of(DJANGO_SECRET_KEY=A_KEY, TRUSTED_PROXY_HEADER="X-Forwarded-For", **env)

    assert process.returncode != 0 and "ImproperlyConfigured" in process.stderr


@pytest.mark.slow
def test_the_launcher_of_the_embedded_servers_marks_a_local_run(tmp_path):
    """`make run` on a fresh machine: manage.py starts the embedded servers, and with them the
    run is local, without a key of its own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SCAIECHO_ENV", "DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL"}
    }
    env["SCAIECHO_DATA_DIR"] = str(tmp_path)
    shell = "from django.conf import settings; print(settings.SCAIECHO_ENV)"

    process = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", shell],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert process.returncode == 0, process.stderr
    assert process.stdout.strip().splitlines()[-1] == "local"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAM_KEY_RECHECK_S", "0"),
        ("DIARIZATION_RESULT_RETENTION_DAYS", "0"),
        ("STREAM_STEP_S", "0"),
        ("STREAM_MAX_LATENCY_S", "0.1"),
        ("STREAM_MAX_TURN_S", "10"),
        ("DUPLICATE_GALLERY_IDLE_S", "0"),
        ("DUPLICATE_GALLERY_MAX_TENANTS", "0"),
    ],
)
def test_bounds_that_would_disable_a_protection_are_refused(name, value):
    process = settings_of(SCAIECHO_ENV="local", **{name: value})

    assert process.returncode != 0
    assert "ImproperlyConfigured" in process.stderr and name in process.stderr
