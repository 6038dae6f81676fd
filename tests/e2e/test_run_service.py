"""`manage.py run_service` (what `make run` starts) driven over real HTTP."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from tests import audio
from tests.live import ROOT, free_port, node_environment, wait_for

pytestmark = [pytest.mark.live, pytest.mark.slow]


@pytest.fixture
def service(live_db, moto_server, settings, tmp_path):
    port = free_port()
    env = node_environment(moto_server, settings.S3_BUCKET)
    env["SCAIECHO_DATA_DIR"] = str(tmp_path)
    env["ENROLLMENT_ACK_WAIT_S"] = "30"  # the freshly started node may still be warming up
    log = tmp_path / "service.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_service", "--port", str(port), "--nodes", "e2e-node"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        key = wait_for(
            lambda: (m := re.search(r"SCAIECHO_API_KEY=(\S+)", log.read_text())) and m.group(1),
            timeout_s=120,
            what="the demo key",
        )
        wait_for(lambda: _answers(f"{base}/v1/openapi.json"), timeout_s=120, what="the API")
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        wait_for(
            lambda: any(
                n["candidate"] for n in client.get("/v1/modules/scaiecho/nodes").json()["data"]
            ),
            timeout_s=120,
            what="the node",
        )
        yield client
    finally:
        process.terminate()
        process.wait(timeout=60)
        print(log.read_text()[-8000:])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_enroll_warm_and_erase_over_http(service):
    response = service.post(
        "/v1/modules/scaiecho/speakers",
        data={
            "display_name": "Alice Example",
            "language_primary": "en",
            "consent_user_full_name": "Alice Example",
            "consent_stated_purpose": "Meeting diarization",
            "consent_text": "I consent to enrollment for diarization.",
        },
        files={
            "reference": ("a.flac", audio.encode(audio.clip(audio.SPEAKER_A), "flac")),
            "consent": ("c.mp3", audio.encode(audio.clip(audio.SPEAKER_A_CONSENT), "mp3")),
        },
    )
    assert response.status_code == 201, response.text
    speaker = response.json()["data"]
    assert speaker["enrollment_status"] == "ready"
    assert speaker["enrolled_on"] == ["e2e-node"]

    warm = service.get(f"/v1/modules/scaiecho/speakers/{speaker['id']}/warm").json()["data"]
    assert warm["warm_node_ids"] == ["e2e-node"]

    receipt = service.delete(f"/v1/modules/scaiecho/speakers/{speaker['id']}").json()["data"]
    done = wait_for(
        lambda: (
            (
                r := service.get(f"/v1/modules/scaiecho/erasures/{receipt['audit_id']}").json()[
                    "data"
                ]
            )["complete"]
            and r
        ),
        what="the node's eviction",
    )
    assert done["nodes"] == [
        {
            "node_id": "e2e-node",
            "state": "evicted",
            "detail": "embedding removed from memory",
            "confirmed_at": done["nodes"][0]["confirmed_at"],
        }
    ]
