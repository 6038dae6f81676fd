import io

import numpy as np
import pytest

from common.audio import AudioRejected, decode_audio
from tests import audio


def decode(data: bytes, max_duration_s: float = 600.0):
    return decode_audio(io.BytesIO(data), max_duration_s=max_duration_s)


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg", "m4a"])
def test_every_supported_format_decodes_to_16k_mono(fmt):
    decoded = decode(audio.encode(audio.clip(audio.SPEAKER_A), fmt))
    assert decoded.format == fmt
    assert decoded.sample_rate == 16_000
    assert decoded.samples.ndim == 1
    assert decoded.samples.dtype == np.float32
    assert abs(decoded.duration_s - 6.65) < 0.2


def test_format_is_recognised_by_content_not_name():
    flac_bytes = audio.encode(audio.tone(1.0), "flac")
    # The bytes are all the decoder ever sees: a FLAC is a FLAC whatever it was called.
    assert decode(flac_bytes).format == "flac"


def test_higher_sample_rates_are_resampled_and_reported():
    decoded = decode(audio.encode(audio.tone(2.0, rate=44_100), rate=44_100))
    assert decoded.original_sample_rate == 44_100
    assert abs(decoded.samples.size - 32_000) < 400


@pytest.mark.parametrize(
    "payload",
    [b"", b"not audio at all " * 64, b"RIFF\x00\x00\x00\x00WAVEfmt "],
    ids=["empty", "text", "truncated-header"],
)
def test_garbage_is_undecodable(payload):
    with pytest.raises(AudioRejected) as rejected:
        decode(payload)
    assert rejected.value.code == "audio_undecodable"


def test_other_media_is_an_unsupported_format():
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 512
    with pytest.raises(AudioRejected) as rejected:
        decode(png)
    assert rejected.value.code == "audio_unsupported_format"


def test_declared_duration_over_the_limit_is_refused_before_decoding():
    with pytest.raises(AudioRejected) as rejected:
        decode(audio.encode(audio.tone(8.0)), max_duration_s=5.0)
    assert rejected.value.code == "audio_too_long"
    assert rejected.value.measured == pytest.approx(8.0, abs=0.1)
    assert rejected.value.threshold == 5.0


def test_truncated_file_keeps_its_decoded_head():
    data = audio.encode(audio.clip(audio.SPEAKER_A), "flac")
    decoded = decode(data[: len(data) // 2])
    assert 1.0 < decoded.duration_s < 6.0


def test_clipping_is_measured_before_resampling():
    loud = np.clip(audio.clip(audio.SPEAKER_A) * 20, -1, 1)
    assert decode(audio.encode(loud)).clipped_fraction > 0.01
    assert decode(audio.encode(audio.clip(audio.SPEAKER_A))).clipped_fraction == 0.0
