"""Render Transcripts as plain text, JSON Lines, SRT or WebVTT."""

from __future__ import annotations

import json

from budgie.results import Segment, Transcript, TranscriptionError

FORMATS = ("text", "json", "srt", "vtt")
EXTENSIONS = {"text": ".txt", "json": ".json", "srt": ".srt", "vtt": ".vtt"}


def _clock(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cues(transcript: Transcript) -> list[Segment]:
    """Subtitle cues: the segments, or one cue for the whole text when there are none."""
    if transcript.segments:
        return transcript.segments
    if transcript.text:
        return [Segment(transcript.text, 0.0, transcript.duration_s)]
    return []


def to_srt(transcript: Transcript) -> str:
    blocks = [
        f"{i}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n{c.text}\n"
        for i, c in enumerate(_cues(transcript), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript) -> str:
    blocks = [
        f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n{c.text}\n" for c in _cues(transcript)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(result: Transcript | TranscriptionError, fmt: str) -> str:
    """One input's output in ``fmt``; errors render as a JSON record or a comment line."""
    if fmt == "json":
        return json.dumps(result.to_dict(), ensure_ascii=False)
    if isinstance(result, TranscriptionError):
        return f"# error: {result.source}: {result.error}"
    if fmt == "srt":
        return to_srt(result)
    if fmt == "vtt":
        return to_vtt(result)
    return result.text
