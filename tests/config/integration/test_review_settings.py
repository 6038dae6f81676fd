"""The review hold's settings as a fresh process reads them: policies are checked at start,
and the older duplicate switch still means what it meant."""

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
names = ["PREFLIGHT_CONSENT_POLICY", "PREFLIGHT_SECOND_VOICE_POLICY",
         "PREFLIGHT_DUPLICATE_POLICY", "REVIEW_EXPIRY_DAYS", "REVIEW_REQUIRE_OTHER_REVIEWER"]
print(json.dumps({name: getattr(settings, name) for name in names}))
"""


def settings_of(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFLIGHT_", "REVIEW_", "SCAIECHO_ENV"))
    }
    clean.update(DJANGO_SETTINGS_MODULE="config.settings", SCAIECHO_ENV="local")
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


def test_uncertain_checks_are_held_for_review_by_default():
    assert read() == {
        "PREFLIGHT_CONSENT_POLICY": "review",
        "PREFLIGHT_SECOND_VOICE_POLICY": "review",
        "PREFLIGHT_DUPLICATE_POLICY": "review",
        "REVIEW_EXPIRY_DAYS": 14,
        "REVIEW_REQUIRE_OTHER_REVIEWER": True,
    }


def test_policies_are_read_case_insensitively():
    values = read(PREFLIGHT_CONSENT_POLICY="Reject", PREFLIGHT_SECOND_VOICE_POLICY="warn")
    assert values["PREFLIGHT_CONSENT_POLICY"] == "reject"
    assert values["PREFLIGHT_SECOND_VOICE_POLICY"] == "warn"


def test_the_older_duplicate_switch_means_the_reject_policy():
    assert read(PREFLIGHT_REJECT_DUPLICATE_VOICE="true")["PREFLIGHT_DUPLICATE_POLICY"] == "reject"


@pytest.mark.parametrize(
    "env",
    [
        {"PREFLIGHT_CONSENT_POLICY": "hold"},
        {"PREFLIGHT_SECOND_VOICE_POLICY": ""},
        {"PREFLIGHT_DUPLICATE_POLICY": "accept"},
        {"PREFLIGHT_REJECT_DUPLICATE_VOICE": "true", "PREFLIGHT_DUPLICATE_POLICY": "review"},
        {"REVIEW_EXPIRY_DAYS": "0"},
    ],
    ids=[
        "unknown-consent-policy",
        "empty-policy",
        "unknown-duplicate-policy",
        "conflict",
        "expiry",
    ],
)
def test_a_bad_review_setting_is_refused_at_start(env):
    process = settings_of(**env)
    assert process.returncode != 0
    assert "ImproperlyConfigured" in process.stderr
