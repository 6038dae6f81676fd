"""The streaming route's decoder: the client's binary frames to 16 kHz mono float samples."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from diarization.streaming import PcmDecoder, StreamError
from tests import audio

# KSDATAFORMAT_SUBTYPE_PCM, the GUID a WAVE_FORMAT_EXTENSIBLE header names its samples with.
PCM_SUBFORMAT = b"\x01\x00\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def wav_bytes(
    frames: np.ndarray, rate: int, *, float32: bool = False, extensible: bool = False
) -> bytes:
    """A RIFF/WAVE file of ``frames`` (samples, or samples x channels) in [-1, 1]."""
    frames = frames.reshape(len(frames), -1)
    channels = frames.shape[1]
    if float32:
        data, tag, bits = frames.astype("<f4").tobytes(), 3, 32
    else:
        pcm = np.round(np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")
        data, tag, bits = pcm.tobytes(), 1, 16
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    if extensible:
        fmt = (
            struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * align, align, bits)
            + struct.pack("<HHI", 22, bits, 0)
            + PCM_SUBFORMAT
        )
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def decode_in_frames(decoder: PcmDecoder, data: bytes, size: int) -> np.ndarray:
    """Every frame decoded, then what the resampler holds at the end of the stream."""
    parts = [decoder.decode(data[i : i + size]) for i in range(0, len(data), size)]
    parts.append(decoder.finish())
    for part in parts:
        assert part.dtype == np.float32 and part.ndim == 1
    return np.concatenate(parts)


def int16_samples(seconds: float = 0.5) -> np.ndarray:
    """Speech from the sample, as the int16 values a 16-bit WAV of it holds."""
    speech = audio.clip([(10.6, 10.6 + seconds)])
    return np.round(np.clip(speech, -1.0, 1.0) * 32767).astype(np.int16)


# --- WAV ----------------------------------------------------------------------------------


def test_wav_header_arriving_in_pieces_is_parsed_once_whole():
    # PyAV's WAV, as a client would record it: RIFF, fmt, a LIST chunk, then data.
    pcm = int16_samples()
    data = audio.encode(pcm.astype(np.float32) / 32767)
    header_end = data.index(b"data") + 8
    decoder = PcmDecoder("audio/wav")

    # The header, byte by byte: nothing comes out until the data chunk starts.
    for index in range(header_end):
        assert decoder.decode(data[index : index + 1]).size == 0
    out = decode_in_frames(decoder, data[header_end:], 3200)

    assert len(out) == len(pcm)
    np.testing.assert_array_equal(out, pcm.astype(np.float32) / 32768.0)


def split_anywhere(data: bytes, header_end: int) -> dict[int, object]:
    """Decodes ``data`` in two frames cut at each byte of the header; what each cut gave."""
    outcomes: dict[int, object] = {}
    for cut in range(1, header_end + 1):
        decoder = PcmDecoder("audio/wav")
        try:
            outcomes[cut] = np.concatenate([decoder.decode(data[:cut]), decoder.decode(data[cut:])])
        except StreamError as exc:
            outcomes[cut] = exc.code
    return outcomes


def test_wav_header_split_in_two_anywhere():
    pcm = int16_samples(0.2)
    data = wav_bytes(pcm.astype(np.float32) / 32767, 16_000)
    expected = pcm.astype(np.float32) / 32768.0

    outcomes = split_anywhere(data, data.index(b"data") + 10)

    wrong = {cut: out for cut, out in outcomes.items() if not np.array_equal(out, expected)}
    assert wrong == {}


def test_wav_first_frame_may_carry_header_and_samples_together():
    pcm = int16_samples()
    decoder = PcmDecoder("audio/x-wav")

    out = decoder.decode(wav_bytes(pcm.astype(np.float32) / 32767, 16_000))

    np.testing.assert_array_equal(out, pcm.astype(np.float32) / 32768.0)


def test_extensible_wav_header_split_anywhere():
    """WAVE_FORMAT_EXTENSIBLE (what many recorders write) split anywhere in its header.

    Its fmt chunk is 40 bytes; the real sample format sits at bytes 24-26 of the chunk body
    (file bytes 44-46). A header cut before those bytes have come must wait for more, not be
    refused as an unsupported format.
    """
    pcm = int16_samples(0.1)
    data = wav_bytes(pcm.astype(np.float32) / 32767, 16_000, extensible=True)
    expected = pcm.astype(np.float32) / 32768.0

    outcomes = split_anywhere(data, data.index(b"data") + 10)

    wrong = {cut: out for cut, out in outcomes.items() if not np.array_equal(out, expected)}
    assert wrong == {}


def test_16bit_pcm_at_16khz_mono_is_passed_through_unchanged():
    pcm = int16_samples(1.0)
    data = wav_bytes(pcm.astype(np.float32) / 32767, 16_000)

    out = decode_in_frames(PcmDecoder("audio/wav"), data, 3200)

    assert len(out) == 16_000
    np.testing.assert_array_equal(out, pcm.astype(np.float32) / 32768.0)


def stereo_tone(rate: int, seconds: float = 2.0) -> np.ndarray:
    left = audio.tone(seconds, 440.0, 0.5, rate=rate)
    right = audio.tone(seconds, 440.0, 0.3, rate=rate)
    return np.stack([left, right], axis=1)


def test_44k1_stereo_is_mixed_to_mono_and_resampled_to_16khz():
    data = wav_bytes(stereo_tone(44_100), 44_100)

    out = decode_in_frames(PcmDecoder("audio/wav"), data, len(data))

    assert abs(len(out) - 2.0 * 16_000) <= 2
    # The mean of both channels: a 440 Hz tone at amplitude 0.4.
    expected = audio.tone(2.0, 440.0, 0.4)
    np.testing.assert_allclose(out[200:-200], expected[200 : len(out) - 200], atol=0.01)


@pytest.mark.parametrize("frame_bytes", [4096, 1000, 101])
def test_44k1_resampled_length_does_not_depend_on_frame_size(frame_bytes):
    """2 s of audio is 2 s at 16 kHz however the client cuts the stream.

    4096 and 1000 bytes are typical socket buffer sizes that do not fall on 441-sample
    boundaries (the resampling ratio is 160/441); 101 bytes is a small worst case.
    """
    data = wav_bytes(stereo_tone(44_100), 44_100)

    out = decode_in_frames(PcmDecoder("audio/wav"), data, frame_bytes)

    assert abs(len(out) - 2.0 * 16_000) <= 2


def test_44k1_in_100ms_frames_matches_decoding_in_one_go():
    # 17,640 bytes: 100 ms of 44.1 kHz 16-bit stereo, 1600 samples out of each frame.
    data = wav_bytes(stereo_tone(44_100), 44_100)
    whole = decode_in_frames(PcmDecoder("audio/wav"), data, len(data))
    header_end = data.index(b"data") + 8
    decoder = PcmDecoder("audio/wav")
    assert decoder.decode(data[:header_end]).size == 0

    out = decode_in_frames(decoder, data[header_end:], 17_640)

    assert len(out) == len(whole) == 32_000
    # No clicks at the frame boundaries: the signal of the stream decoded in one go.
    np.testing.assert_allclose(out[200:-200], whole[200:-200], atol=0.02)


def test_32bit_float_wav_keeps_its_values():
    samples = audio.clip([(21.9, 22.9)]).astype(np.float32)
    data = wav_bytes(samples, 16_000, float32=True)

    out = decode_in_frames(PcmDecoder("audio/wav"), data, 1000)

    np.testing.assert_array_equal(out, samples)


def test_32bit_float_stereo_wav_is_mixed_to_mono():
    frames = np.stack([np.full(1600, 0.5, np.float32), np.full(1600, -0.1, np.float32)], axis=1)
    data = wav_bytes(frames, 16_000, float32=True)

    out = decode_in_frames(PcmDecoder("audio/wave"), data, 777)

    assert len(out) == 1600
    np.testing.assert_allclose(out, 0.2, atol=1e-6)


def test_32bit_float_wav_at_48khz_is_resampled():
    data = wav_bytes(audio.tone(1.0, 300.0, 0.5, rate=48_000), 48_000, float32=True)

    out = decode_in_frames(PcmDecoder("audio/wav"), data, len(data))

    assert abs(len(out) - 16_000) <= 1
    np.testing.assert_allclose(out[200:-200], audio.tone(1.0, 300.0, 0.5)[200:-200], atol=0.01)


def test_24bit_wav_is_refused():
    data = bytearray(wav_bytes(np.zeros(160, np.float32), 16_000))
    data[34:36] = struct.pack("<H", 24)  # bits per sample

    with pytest.raises(StreamError) as raised:
        PcmDecoder("audio/wav").decode(bytes(data))

    assert raised.value.code == "unsupported_media_type"


def test_non_riff_stream_is_malformed():
    decoder = PcmDecoder("audio/wav")
    ogg = audio.encode(audio.tone(0.5), "ogg")

    with pytest.raises(StreamError) as raised:
        decoder.decode(ogg[:4096])

    assert raised.value.code == "malformed_audio"


def test_non_riff_stream_is_refused_once_twelve_bytes_have_come():
    decoder = PcmDecoder("audio/wav")
    assert decoder.decode(b"\x00\x01" * 5).size == 0  # 10 bytes: not yet judged

    with pytest.raises(StreamError) as raised:
        decoder.decode(b"\x00\x01")

    assert raised.value.code == "malformed_audio"


def test_wav_without_a_data_chunk_in_64_kib_is_malformed():
    decoder = PcmDecoder("audio/wav")
    fmt = struct.pack("<HHIIHH", 1, 1, 16_000, 32_000, 2, 16)
    header = b"RIFF\xff\xff\xff\xffWAVEfmt " + struct.pack("<I", 16) + fmt
    junk = b"JUNK" + struct.pack("<I", 200_000)

    assert decoder.decode(header + junk).size == 0
    with pytest.raises(StreamError) as raised:
        for _ in range(20):
            decoder.decode(b"\x00" * 8192)

    assert raised.value.code == "malformed_audio"


# --- raw PCM -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "media_type", ["audio/pcm", "audio/pcm;rate=16000", "audio/PCM; rate=16000"]
)
def test_raw_16khz_pcm_is_taken_as_is(media_type):
    pcm = int16_samples()

    out = decode_in_frames(PcmDecoder(media_type), pcm.astype("<i2").tobytes(), 3200)

    np.testing.assert_array_equal(out, pcm.astype(np.float32) / 32768.0)


def test_l16_is_big_endian_as_rfc_3551_defines_it():
    pcm = int16_samples()

    out = decode_in_frames(PcmDecoder("audio/L16;rate=16000"), pcm.astype(">i2").tobytes(), 999)

    np.testing.assert_array_equal(out, pcm.astype(np.float32) / 32768.0)


@pytest.mark.parametrize(
    "media_type",
    ["audio/pcm;rate=8000", "audio/pcm;rate=44100", "audio/ogg", "audio/mpeg", "text/plain"],
)
def test_unsupported_media_types_are_refused(media_type):
    with pytest.raises(StreamError) as raised:
        PcmDecoder(media_type)

    assert raised.value.code == "unsupported_media_type"


@pytest.mark.parametrize("frame_bytes", [1, 3, 7, 333])
def test_odd_byte_counts_carry_partial_samples_to_the_next_frame(frame_bytes):
    pcm = int16_samples(0.25)
    data = pcm.astype("<i2").tobytes()
    decoder = PcmDecoder("audio/pcm")

    out = decode_in_frames(decoder, data, frame_bytes)

    np.testing.assert_array_equal(out, pcm.astype(np.float32) / 32768.0)


@pytest.mark.parametrize("frame_bytes", [1, 5, 13, 1001])
def test_partial_float_stereo_frames_are_carried_over(frame_bytes):
    rng = np.random.default_rng(0)
    frames = rng.uniform(-0.5, 0.5, size=(800, 2)).astype(np.float32)
    data = wav_bytes(frames, 16_000, float32=True)

    out = decode_in_frames(PcmDecoder("audio/wav"), data, frame_bytes)

    np.testing.assert_allclose(out, frames.mean(axis=1), atol=1e-7)


def test_a_trailing_half_sample_is_held_back_until_completed():
    decoder = PcmDecoder("audio/pcm")
    value = struct.pack("<h", 16384)

    assert decoder.decode(value + value[:1]).tolist() == [0.5]
    assert decoder.decode(value[1:]).tolist() == [0.5]
