"""The cost of decoding, counted in input samples across channels: declared (the header probe)
and as decoded (the node), which stops at the cap whatever the header said."""

from __future__ import annotations

import io

import pytest

from common.audio import AudioRejected, decode_audio, probe_audio
from tests import audio
from tests.diarization.audio_files import declaring_total_samples, multichannel_flac, wav_header

FOUR_HOURS = 4 * 3600.0
TEN_S_OF_16K_MONO = 10 * 16_000


def probe(data: bytes):
    return probe_audio(
        io.BytesIO(data), max_duration_s=FOUR_HOURS, max_input_samples=TEN_S_OF_16K_MONO
    )


class CountingReader(io.BytesIO):
    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def test_the_probe_reads_the_header_not_the_audio():
    size = 40 * 1024 * 1024
    source = CountingReader(wav_header(size) + b"\x01" * size)
    header = probe_audio(source, max_duration_s=FOUR_HOURS)
    assert (header.format, header.sample_rate, header.channels) == ("wav", 16_000, 1)
    assert header.duration_s == pytest.approx(size / 32_000)
    assert source.bytes_read < 1024 * 1024


@pytest.mark.parametrize(
    "seconds, rate, layout, accepted",
    [
        (9.0, 16_000, "mono", True),
        (6.0, 16_000, "stereo", False),  # 192,000 samples
        (3.0, 48_000, "mono", True),  # 144,000
        (4.0, 48_000, "mono", False),  # 192,000
        (0.05, 384_000, "7.1", True),  # 153,600
        (0.1, 384_000, "7.1", False),  # 307,200
    ],
)
def test_the_declared_cost_is_seconds_times_rate_times_channels(seconds, rate, layout, accepted):
    data = multichannel_flac(seconds, rate=rate, layout=layout)
    if accepted:
        assert probe(data).duration_s == pytest.approx(seconds, abs=0.01)
        return
    with pytest.raises(AudioRejected) as rejected:
        probe(data)
    assert rejected.value.code == "audio_too_costly"
    assert rejected.value.threshold == TEN_S_OF_16K_MONO


def test_a_header_declaring_no_duration_passes_the_probe_unmeasured():
    unknown = declaring_total_samples(multichannel_flac(1.0), total=0)
    header = probe(unknown)
    assert header.duration_s is None and header.input_samples is None


def test_decoding_a_lying_header_stops_one_frame_past_the_cap():
    flac = multichannel_flac(5.0)
    max_block = int.from_bytes(flac[10:12], "big")  # STREAMINFO: the largest frame's samples
    liar = declaring_total_samples(flac, total=19_200)  # 0.05 s: under the cap as declared
    with pytest.raises(AudioRejected) as rejected:
        decode_audio(
            io.BytesIO(liar), max_duration_s=FOUR_HOURS, max_input_samples=TEN_S_OF_16K_MONO
        )
    assert rejected.value.code == "audio_too_costly"
    assert rejected.value.measured is not None
    assert TEN_S_OF_16K_MONO < rejected.value.measured <= TEN_S_OF_16K_MONO + max_block * 8
    assert "at least" in rejected.value.message


def test_without_a_cost_cap_the_decoder_takes_any_rate_and_channel_count():
    decoded = decode_audio(io.BytesIO(multichannel_flac(1.0)), max_duration_s=FOUR_HOURS)
    assert (decoded.original_sample_rate, decoded.channels) == (384_000, 8)
    assert decoded.duration_s == pytest.approx(1.0, abs=0.01)


def test_audio_under_the_cap_decodes_as_before():
    decoded = decode_audio(
        io.BytesIO(audio.encode(audio.tone(2.0))),
        max_duration_s=FOUR_HOURS,
        max_input_samples=TEN_S_OF_16K_MONO,
    )
    assert decoded.duration_s == pytest.approx(2.0, abs=0.01)
    assert decoded.samples.size == pytest.approx(32_000, abs=400)
