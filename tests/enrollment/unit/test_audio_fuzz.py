"""Property-based and fuzz tests of the audio decoder: hostile bytes never escape as anything
but a clean refusal (AudioRejected, which the API turns into a 4xx), and never hang."""

from __future__ import annotations

import io
import struct
import time
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.audio import AudioRejected, decode_audio
from tests import audio

LIMIT_S = 600.0
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


def decode_or_refuse(data: bytes) -> None:
    started = time.monotonic()
    try:
        decoded = decode_audio(io.BytesIO(data), max_duration_s=LIMIT_S)
    except AudioRejected as refused:
        assert refused.code.startswith(("audio_", "sample_rate")), refused.code
    else:
        assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
        assert np.isfinite(decoded.samples).all()
        assert decoded.duration_s <= LIMIT_S + 1
    assert time.monotonic() - started < 10.0


@cache
def valid(fmt: str) -> bytes:
    return audio.encode(audio.clip([(10.6, 12.6)]), fmt)


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_decoded_or_refused(data):
    decode_or_refuse(data)


@FUZZ
@given(
    fmt=st.sampled_from(["wav", "flac", "mp3", "ogg", "m4a"]),
    cut=st.floats(min_value=0.0, max_value=1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=24),
)
def test_truncated_and_corrupted_recordings_are_decoded_or_refused(fmt, cut, flips):
    data = bytearray(valid(fmt)[: max(1, int(len(valid(fmt)) * cut))])
    for where, value in flips:
        data[min(len(data) - 1, int(where * len(data)))] = value
    decode_or_refuse(bytes(data))


def wav_header(rate: int, channels: int, bits: int, data_size: int) -> bytes:
    align = min(0xFFFF, max(1, channels * bits // 8))
    fmt = struct.pack("<HHIIHH", 1, channels, rate, min(0xFFFFFFFF, rate * align), align, bits)
    return (
        b"RIFF"
        + struct.pack("<I", min(0xFFFFFFFF, 36 + data_size))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_size)
    )


@pytest.mark.parametrize(
    "rate, channels, bits, data_size",
    [
        (1, 1, 16, 0xFFFFFFF0),  # a 1 Hz rate claiming 4 GB of data
        (4_000_000_000, 1, 16, 1000),  # an absurd rate
        (16_000, 0, 16, 1000),  # no channels
        (16_000, 65535, 16, 1000),  # absurdly many channels
        (16_000, 1, 0, 1000),  # zero-bit samples
        (16_000, 1, 16, 0xFFFFFFFF),  # a huge header with a tiny body
    ],
)
def test_lying_wav_headers_are_refused_or_decoded_cleanly(rate, channels, bits, data_size):
    decode_or_refuse(wav_header(rate, channels, bits, data_size) + b"\x01\x02" * 500)


@pytest.mark.parametrize("payload", [b"", b"RIFF", b"\x00" * 10_000, b"ID3" + b"\xff" * 5000])
def test_empty_and_degenerate_inputs_are_refused(payload):
    with pytest.raises(AudioRejected):
        decode_audio(io.BytesIO(payload), max_duration_s=LIMIT_S)


@pytest.mark.parametrize("rate", [8_000, 11_025, 22_050, 44_100, 48_000, 96_000])
def test_extreme_but_real_sample_rates_decode(rate):
    decoded = decode_audio(
        io.BytesIO(audio.encode(audio.tone(1.0, rate=rate), "wav", rate=rate)), max_duration_s=60
    )
    assert decoded.original_sample_rate == rate
    assert abs(decoded.duration_s - 1.0) < 0.05


def test_a_decompression_bomb_stops_at_the_duration_limit_quickly():
    """Two hours of silence compress to almost nothing in FLAC: decoding stops at the limit."""
    hours = np.zeros(int(2 * 3600 * 16_000), dtype=np.float32)
    bomb = audio.encode(hours, "flac")
    assert len(bomb) < 5 * 1024 * 1024
    started = time.monotonic()
    with pytest.raises(AudioRejected) as refused:
        decode_audio(io.BytesIO(bomb), max_duration_s=LIMIT_S)
    assert refused.value.code == "audio_too_long"
    assert time.monotonic() - started < 30


def test_hours_of_silence_within_the_limit_are_measured_without_keeping_samples():
    silence = audio.encode(np.zeros(int(500 * 16_000), dtype=np.float32), "flac")
    decoded = decode_audio(io.BytesIO(silence), max_duration_s=LIMIT_S, keep_samples=False)
    assert decoded.samples.size == 0 and abs(decoded.duration_s - 500) < 0.1
