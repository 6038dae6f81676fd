"""`manage.py run_service` (what `make run` starts) driven over real HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import httpx
import pytest

from tests import audio
from tests.live import ROOT, answers, free_port, node_environment, wait_for

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
        wait_for(lambda: answers(f"{base}/v1/openapi.json"), timeout_s=120, what="the API")
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


def enroll_alice(service: httpx.Client) -> httpx.Response:
    return service.post(
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


def test_enroll_warm_and_erase_over_http(service):
    response = enroll_alice(service)
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


def test_diarize_a_file_and_a_stream_over_http(service):
    alice = enroll_alice(service).json()["data"]["id"]

    submitted = service.post(
        "/v1/modules/scaiecho/diarize",
        files={"audio": ("meeting.mp3", audio.encode(audio.sample(), "mp3"))},
        data={"num_speakers": "2"},
    )
    assert submitted.status_code == 202, submitted.text
    job = wait_for(
        lambda: (
            (
                b := service.get(f"/v1/modules/scaiecho/diarize/{submitted.json()['data']['id']}")
            ).json()["data"]["status"]
            == "succeeded"
            and b.json()["data"]
        ),
        what="the diarization job",
    )
    labels = {s["speaker_label"] for s in job["result"]["segments"]}
    assert alice in labels and "spk_0" in labels
    rttm = service.get(
        f"/v1/modules/scaiecho/diarize/{job['id']}/result", params={"format": "rttm"}
    )
    assert alice in rttm.text

    # The same recording streamed as WAV in 100 ms frames through the ASGI server.
    from websockets.sync.client import connect

    url = str(service.base_url).replace("http://", "ws://") + "/v1/modules/scaiecho/stream"
    wav = audio.encode(audio.sample())
    with connect(url, additional_headers={"Authorization": service.headers["Authorization"]}) as ws:
        ws.send(json.dumps({"type": "open", "media_type": "audio/wav", "diarize": True}))
        ready = json.loads(ws.recv())
        assert ready == {**ready, "type": "ready", "backend_used": "A", "diarize": True}
        for offset in range(0, len(wav), 3200):
            ws.send(wav[offset : offset + 3200])
        ws.send(json.dumps({"type": "close"}))
        frames = [json.loads(m) for m in ws]
    assert frames[-1]["type"] == "closed"
    deltas = [f for f in frames if f["type"] == "delta"]
    assert deltas and all(d["text"] == "" for d in deltas)
    assert alice in {d.get("speaker_label") for d in deltas}


def test_only_a_configured_proxy_header_names_the_client(service):
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 by default; run_service turns that off,
    so that a client cannot pick a fresh address per request (TRUSTED_PROXY_HEADER is unset
    here: every request below comes from the peer 127.0.0.1)."""
    from django.conf import settings

    for n in range(settings.AUTH_FAILURE_LIMIT):
        guess = service.get(
            "/v1/modules/scaiecho/speakers",
            headers={"Authorization": f"Bearer se_{n:012d}_guess", "X-Forwarded-For": "192.0.2.1"},
        )
        assert guess.status_code == 401, guess.text

    refused = service.get("/v1/modules/scaiecho/speakers", headers={"X-Forwarded-For": "192.0.2.2"})

    assert refused.status_code == 429
    assert "this address" in refused.json()["error"]["message"]
