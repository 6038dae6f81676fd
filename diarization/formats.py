"""A finished job's result as JSON, RTTM, SRT, WebVTT or plain text.

Rendered from the result as it is shown (``diarization.selectors.named_result``): an enrolled
speaker's current name, or their label marked "(erased)" once they are erased.
"""

from __future__ import annotations

import json
from typing import Any

FORMATS = {
    "json": "application/json",
    "rttm": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
}


def render(job_id: str, result: dict[str, Any], fmt: str) -> str:
    segments = result.get("segments", [])
    if fmt == "json":
        return json.dumps(result, ensure_ascii=False)
    if fmt == "rttm":
        # Unlabelled speech has no speaker to name: RTTM lines need one, so it is left out.
        return "".join(
            f"SPEAKER {job_id} 1 {s['start']:.3f} {s['end'] - s['start']:.3f} <NA> <NA> "
            f"{s['speaker_label']} <NA> <NA>\n"
            for s in segments
            if s.get("speaker_label")
        )
    if fmt == "srt":
        return "\n".join(
            f"{n}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{_line(s)}\n"
            for n, s in enumerate(segments, start=1)
        )
    if fmt == "vtt":
        cues = "\n".join(
            f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{_line(s)}\n" for s in segments
        )
        return f"WEBVTT\n\n{cues}"
    if fmt == "txt":
        return "".join(
            f"[{_clock(s['start'], '.')} - {_clock(s['end'], '.')}] {_line(s)}\n" for s in segments
        )
    raise ValueError(f"unknown format {fmt!r}")


def _speaker_name(segment: dict[str, Any]) -> str:
    label = segment.get("speaker_label") or "unknown"
    if segment.get("erased"):
        return f"{label} (erased)"
    return segment.get("display_name") or label


def _line(segment: dict[str, Any]) -> str:
    text = segment.get("text") or ""
    return f"{_speaker_name(segment)}: {text}".rstrip() if text else _speaker_name(segment)


def _clock(seconds: float, separator: str) -> str:
    millis = int(round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"
