"""A diarization upload in a process of its own that is SIGKILLed part-way, as a crash of the
API process would leave it.

    python -m tests.operations.integration.crash_upload API_KEY_ID AUDIO_PATH WHEN

WHEN is ``after-write`` (the blob is stored, the job row never written) or ``mid-write`` (the
process dies with the first part of the upload written). The blob store and the database
come from the environment, as for any process of the service.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import IO

import django


def crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DyingAfterFirstPart:
    """An upload whose process dies as it asks for the second part."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.parts = 0

    def read(self, size: int = -1) -> bytes:
        self.parts += 1
        if self.parts > 1:
            crash()
        return self.source.read(size)


def main(api_key_id: str, audio_path: str, when: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    django.setup()

    from django.core.files.uploadedfile import SimpleUploadedFile

    from common.blobs import LocalBlobStore, get_blob_store
    from diarization.services import jobs
    from tenancy.auth import ApiPrincipal
    from tenancy.models import ApiKey

    key = ApiKey.objects.select_related("tenant").get(id=api_key_id)
    principal = ApiPrincipal(api_key=key, tenant=key.tenant, scopes=frozenset(key.scopes))
    store = get_blob_store()
    write = store.put_file

    def put_file_then_crash(blob_key: str, source: IO[bytes]) -> object:
        if when == "mid-write":
            return write(blob_key, DyingAfterFirstPart(source))
        write(blob_key, source)
        crash()
        raise AssertionError("unreachable")

    if isinstance(store, LocalBlobStore):
        store.chunk_bytes = 64 * 1024  # the sample is smaller than a default part
    store.put_file = put_file_then_crash  # type: ignore[method-assign]
    with open(audio_path, "rb") as recording:
        audio = SimpleUploadedFile("meeting.wav", recording.read(), "audio/wav")
    jobs.submit_job(principal, jobs.JobRequest(), audio)
    raise SystemExit("the upload finished: no crash happened")


if __name__ == "__main__":
    main(*sys.argv[1:4])
