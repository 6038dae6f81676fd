"""The web console in Debian's Chromium (Playwright), against `manage.py run_service`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from console.services import create_console_user
from enrollment.models import Speaker
from tests import audio
from tests.factories import make_tenant
from tests.live import ROOT, free_port, node_environment, wait_for

pytestmark = [pytest.mark.live, pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
SCREENSHOTS = ROOT / ".data" / "screenshots"
PASSWORD = "a long console password"
NODE = "console-node"
T = TypeVar("T")


@pytest.fixture
def chromium(console):
    """A browser per test, started after the service (and torn down before its data)."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        if os.environ.get("CONSOLE_BROWSER_REQUIRED"):
            pytest.fail(f"Chromium not found at {CHROMIUM} (run `make browser`)")
        pytest.skip(f"Chromium not found at {CHROMIUM}; `make browser` installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def console(live_db, moto_server, settings, tmp_path):
    """The whole service with one node; the speaker page must show fan-out progress itself,
    so enrollment answers at once instead of waiting for the node."""
    port = free_port()
    env = node_environment(moto_server, settings.S3_BUCKET)
    env["SCAIECHO_DATA_DIR"] = str(tmp_path)
    env["ENROLLMENT_ACK_WAIT_S"] = "0"
    log = tmp_path / "service.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_service", "--port", str(port), "--nodes", NODE],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        from nodes.registry import candidate_node_ids

        wait_for(lambda: NODE in candidate_node_ids(), timeout_s=120, what="the node")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=60)
        print(log.read_text()[-6000:])


@pytest.fixture
def page(console, chromium, request):
    context = chromium.new_context(accept_downloads=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{request.node.name}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
    context.close()


def in_thread(work: Callable[[], T]) -> T:
    """Runs ORM work on a thread of its own: Playwright's sync API keeps an event loop on
    this one, where Django refuses synchronous ORM calls."""
    from django.db import connections

    def run() -> T:
        try:
            return work()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def sign_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/console/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/console/speakers/$"))


def recording(tmp_path: Path, name: str, samples) -> str:
    path = tmp_path / name
    path.write_bytes(audio.encode(samples))
    return str(path)


def fill_enrollment(page, tmp_path: Path, reference) -> None:
    page.fill("#id_display_name", "Alice Example")
    page.fill("#id_language_primary", "en")
    page.fill("#id_consent_user_full_name", "Alice Example")
    page.fill("#id_consent_stated_purpose", "Meeting diarization for the support team")
    page.fill("#id_consent_text", "I, Alice Example, consent to enrolling my voice.")
    page.set_input_files("#id_reference", recording(tmp_path, "reference.wav", reference))
    page.set_input_files(
        "#id_consent", recording(tmp_path, "consent.wav", audio.clip(audio.SPEAKER_A_CONSENT))
    )
    page.click("#enroll-form button[type=submit]")


def test_an_admin_enrolls_rewarms_and_erases_in_the_browser(console, page, tmp_path):
    in_thread(lambda: create_console_user(make_tenant(), "ada", "admin", PASSWORD))
    sign_in(page, console, "ada")

    # A bad recording: the findings say why, in words.
    page.click("#enroll-link")
    fill_enrollment(page, tmp_path, audio.silence(6.0))
    rejection = page.locator("#rejection")
    rejection.wait_for()
    assert "not enough speech" in rejection.inner_text()
    assert "why it was rejected" in rejection.inner_text()

    # A good one: the speaker page follows the fan-out until the node holds it.
    page.goto(f"{console}/console/speakers/new/")
    fill_enrollment(page, tmp_path, audio.clip(audio.SPEAKER_A))
    page.wait_for_url(re.compile(r".*/console/speakers/[0-9a-f-]{36}/$"))
    speaker_url = page.url
    page.wait_for_function(
        "document.getElementById('status').textContent === 'ready'", timeout=60_000
    )
    assert NODE in page.inner_text("#warm-nodes")
    assert "Meeting diarization" in page.inner_text("#consent")

    page.click("#rewarm")
    page.wait_for_url(speaker_url)
    page.wait_for_function(f"document.getElementById('warm-nodes').textContent.includes('{NODE}')")

    page.click("#erase")
    assert "Erase Alice Example?" in page.inner_text("h1")
    page.click("#confirm-erase")
    page.wait_for_url(re.compile(r".*/console/erasures/[0-9a-f-]{36}/$"))
    page.wait_for_function(
        "document.getElementById('complete').textContent === 'yes'", timeout=60_000
    )
    assert "evicted" in page.inner_text("#receipt-nodes")
    assert "deleted" in page.inner_text("#blobs")

    page.goto(f"{console}/console/nodes/")
    assert NODE in page.inner_text("#node-table") and "live" in page.inner_text("#node-table")


def test_an_auditor_reads_and_exports_but_cannot_change_anything(console, page, tmp_path):
    from django.test import override_settings

    from enrollment.services import SpeakerProfile, enroll_speaker
    from tests.factories import make_principal, upload

    def enroll_bob() -> Speaker:
        tenant = make_tenant()
        create_console_user(tenant, "aud", "auditor", PASSWORD)
        with override_settings(ENROLLMENT_ACK_WAIT_S=0):
            return enroll_speaker(
                principal=make_principal(tenant),
                profile=SpeakerProfile(
                    display_name="Bob Example",
                    language_primary="en",
                    description="",
                    consent_user_full_name="Bob Example",
                    consent_stated_purpose="Diarization",
                    consent_text="I consent.",
                ),
                reference=upload("r.wav", audio.encode(audio.clip(audio.SPEAKER_B)), "audio/wav"),
                consent=upload(
                    "c.wav", audio.encode(audio.clip(audio.SPEAKER_B_CONSENT)), "audio/wav"
                ),
                client_ip="127.0.0.1",
            ).speaker

    speaker = in_thread(enroll_bob)
    sign_in(page, console, "aud")

    assert page.locator("#enroll-link").count() == 0
    page.click("text=Bob Example")
    assert page.locator("#rewarm").count() == 0 and page.locator("#erase").count() == 0
    assert "Bob Example" in page.inner_text("#consent")

    # The server refuses what the page does not offer.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    for url in (
        f"/console/speakers/{speaker.id}/erase/",
        f"/console/speakers/{speaker.id}/rewarm/",
    ):
        response = page.request.post(
            f"{console}{url}", headers={"X-CSRFToken": token, "Referer": f"{console}/console/"}
        )
        assert response.status == 403, url

    page.click("text=Audit trail")
    assert "The hash chain verifies" in page.inner_text("#verdict")
    with page.expect_download() as download:
        page.click("#export-csv")
    exported = Path(download.value.path()).read_text()
    assert exported.startswith("seq,") and "speaker.enrolled" in exported


def test_an_admin_plays_both_recordings_and_approves_one_rejects_one(console, page):
    from django.test import override_settings

    from enrollment.services import SpeakerProfile, enroll_speaker
    from tests.factories import make_principal, upload

    def enroll_two_held() -> list[Speaker]:
        tenant = make_tenant()
        create_console_user(tenant, "rev", "admin", PASSWORD)
        enroller = make_principal(tenant)  # an API key: the console user is another reviewer
        held = []
        for name in ("First Held", "Second Held"):
            with override_settings(ENROLLMENT_ACK_WAIT_S=0):
                speaker = enroll_speaker(
                    principal=enroller,
                    profile=SpeakerProfile(
                        display_name=name,
                        language_primary="en",
                        description="",
                        consent_user_full_name=name,
                        consent_stated_purpose="Diarization",
                        consent_text="I consent.",
                    ),
                    reference=upload(
                        "r.wav", audio.encode(audio.clip(audio.SPEAKER_A)), "audio/wav"
                    ),
                    # The sample's other speaker: an uncertain consent match, held.
                    consent=upload(
                        "c.wav", audio.encode(audio.clip(audio.SPEAKER_B_CONSENT)), "audio/wav"
                    ),
                    client_ip="127.0.0.1",
                ).speaker
            assert speaker.enrollment_status == "needs_review"
            held.append(speaker)
        return held

    first, second = in_thread(enroll_two_held)
    sign_in(page, console, "rev")
    page.click("text=Review queue")
    page.wait_for_url(re.compile(r".*/console/reviews/$"))

    section = page.locator(f"section[data-speaker='{first.id}']")
    assert "does not sound like the same person" in section.inner_text()
    for role in ("reference", "consent"):
        player = section.locator(f"audio.{role}")
        # Muted, so that no autoplay policy needs a gesture; the browser fetches, decodes and
        # plays the recording the console streams.
        player.evaluate("el => { el.muted = true; return el.play(); }")
        page.wait_for_function(
            "el => el.currentTime > 0.2 && isFinite(el.duration) && el.duration > 1",
            arg=player.element_handle(),
            timeout=30_000,
        )

    section.locator("input[name=note]").fill("Checked with her by phone")
    section.locator("button.approve").click()
    page.wait_for_url(re.compile(r".*/console/reviews/$"))
    assert page.locator(f"section[data-speaker='{first.id}']").count() == 0
    assert "Checked with her by phone" in page.inner_text("#decisions")

    page.locator(f"section[data-speaker='{second.id}'] button.reject").click()
    page.wait_for_url(re.compile(r".*/console/erasures/[0-9a-f-]{36}/$"))
    page.wait_for_function(
        "document.getElementById('complete').textContent === 'yes'", timeout=60_000
    )

    def statuses() -> dict[str, str]:
        return {
            str(s.id): s.enrollment_status
            for s in Speaker.objects.filter(id__in=[first.id, second.id])
        }

    wait_for(
        lambda: in_thread(statuses) == {str(first.id): "ready", str(second.id): "evicted"},
        timeout_s=60,
        what="the approved speaker to turn ready on the node",
    )
