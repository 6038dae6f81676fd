"""Recordings that cost more to decode than their size or duration suggests, made with PyAV."""

from __future__ import annotations

import io
import struct

import av
import numpy as np

# FLAC's STREAMINFO: "fLaC", a 4-byte block header, then 10 bytes of block and frame sizes
# before the 64 bits holding the sample rate (20), channels - 1 (3), bits - 1 (5) and the
# total number of samples per channel (36).
_STREAMINFO_RATE_AND_TOTAL = slice(18, 26)
_TOTAL_BITS = (1 << 36) - 1


def multichannel_flac(seconds: float, rate: int = 384_000, layout: str = "7.1") -> bytes:
    """Silence on every channel: FLAC packs it into a few kilobytes whatever the rate."""
    channels = av.AudioLayout(layout).nb_channels
    silence = np.zeros((1, int(seconds * rate) * channels), np.int16)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(silence, format="s16", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def declaring_total_samples(flac: bytes, total: int) -> bytes:
    """The same FLAC with a header that declares ``total`` samples per channel (0: unknown)."""
    (packed,) = struct.unpack(">Q", flac[_STREAMINFO_RATE_AND_TOTAL])
    packed = (packed & ~_TOTAL_BITS) | total
    return flac[:18] + struct.pack(">Q", packed) + flac[26:]


def with_garbage_frames(flac: bytes) -> bytes:
    """A valid FLAC header (STREAMINFO) followed by bytes that are no FLAC frames."""
    header_end = 8 + 34  # "fLaC", the block header, STREAMINFO
    last = bytes([flac[4] | 0x80]) + flac[5:header_end]  # STREAMINFO marked the last block
    return flac[:4] + last + b"\x00\x01\x02\x03" * 4096


def wav_header(data_bytes: int, rate: int = 16_000, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV header for ``data_bytes`` of samples."""
    block = 2 * channels
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )
