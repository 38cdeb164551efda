"""From a source's bytes to encoded clips: decode, conform (channels, rate), hash, segment, pad, filter silence, encode.

Segmentation (sample counts at the build's rate ``sr``): clip ``k`` starts at ``k * hop`` and spans ``L = clip_s * sr``
frames. Every full window is a clip; the first window that runs past the end is the tail: kept (zero-padded to ``L``,
``padded=True``) when it holds at least ``min_clip_s`` of audio, dropped otherwise; nothing after it. A clip whose RMS
over its real (unpadded) audio is below ``silence_db`` dBFS is filtered and counted. Clip indices stay positional
(``offset_s = k * hop_s``) even when a clip is filtered, so a key always tells where its audio came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from n2m import audio


@dataclass(frozen=True)
class ClipSettings:
    """Everything that decides a clip's samples (part of every shard spec's hash)."""

    sample_rate: int = 24000
    channels: int = 1
    clip_s: float = 30.0
    hop_s: float = 30.0
    min_clip_s: float = 15.0
    silence_db: float = -60.0
    max_source_s: float = 1200.0

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.channels <= 0:
            raise ValueError("sample rate and channels must be positive")
        if not 0 < self.min_clip_s <= self.clip_s or self.hop_s <= 0:
            raise ValueError("need 0 < min clip <= clip seconds and hop > 0")
        if min(self.clip_frames, self.hop_frames, self.min_frames) < 1:  # segmentation advances by whole frames
            raise ValueError("clip, hop and minimum clip must each be at least one frame at the sample rate")

    @property
    def clip_frames(self) -> int:
        return int(round(self.clip_s * self.sample_rate))

    @property
    def hop_frames(self) -> int:
        return int(round(self.hop_s * self.sample_rate))

    @property
    def min_frames(self) -> int:
        return int(round(self.min_clip_s * self.sample_rate))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Clip:
    """One clip: ``flac`` holds ``[channels, clip_frames]`` PCM_16 at the build rate (padding included)."""

    index: int
    offset_s: float
    duration_s: float  # real audio, before padding
    padded: bool
    rms_db: float
    flac: bytes


@dataclass
class Processed:
    """What one source gave: its clips and counts, or a reason (``too_short``/``silent`` filter, else failure)."""

    duration_s: float = 0.0  # decoded input duration
    pcm_sha1: str = ""  # sha1 of the conformed int16 PCM (the duplicate key)
    decoder: str = ""
    note: str = ""  # why the decoder was not the first choice (``n2m.audio.Decoded.note``)
    clips: list[Clip] = field(default_factory=list)
    silent_clips: int = 0
    reason: str = ""
    message: str = ""


def segment_bounds(total: int, settings: ClipSettings) -> list[tuple[int, int, int]]:
    """``(index, start, stop)`` frame ranges of the clips of a ``total``-frame signal (``stop - start < L`` = tail)."""
    length, hop, minimum = settings.clip_frames, settings.hop_frames, settings.min_frames
    bounds = []
    k = 0
    while k * hop < total:
        start = k * hop
        stop = min(start + length, total)
        if stop - start < length:
            if stop - start >= minimum:
                bounds.append((k, start, stop))
            break
        bounds.append((k, start, stop))
        if stop == total:
            break
        k += 1
    return bounds


def conform(data: bytes, settings: ClipSettings, name: str = "") -> tuple[np.ndarray, audio.Decoded]:
    """Decode bytes and bring them to the build's channels and rate: float32 ``[channels, T]``."""
    decoded = audio.decode(data, max_seconds=settings.max_source_s, name=name)
    mixed = audio.to_channels(decoded.samples, settings.channels)
    return audio.resample(mixed, decoded.sample_rate, settings.sample_rate), decoded


def make_clips(samples: np.ndarray, settings: ClipSettings) -> tuple[list[Clip], int]:
    """Cut ``[C, T]`` into encoded clips; returns (kept clips, number of silent clips filtered)."""
    length = settings.clip_frames
    clips, silent = [], 0
    for index, start, stop in segment_bounds(samples.shape[1], settings):
        window = samples[:, start:stop]
        level = audio.rms_db(window)
        if level < settings.silence_db:
            silent += 1
            continue
        padded = stop - start < length
        if padded:
            window = np.pad(window, ((0, 0), (0, length - (stop - start))))
        clips.append(
            Clip(
                index=index,
                offset_s=start / settings.sample_rate,
                duration_s=(stop - start) / settings.sample_rate,
                padded=padded,
                rms_db=round(level, 3),
                flac=audio.encode_flac(window, settings.sample_rate),
            )
        )
    return clips, silent


def process(data: bytes, settings: ClipSettings, name: str = "") -> Processed:
    """Bytes of one source -> :class:`Processed`. Raises ``AudioError`` for undecodable input.

    Duplicates are keyed by ``pcm_hash`` of the *conformed* audio: the same decoded audio in any container always
    collides, and so does audio differing only in what the build discards (e.g. channel balance in a mono build),
    whose clips would be byte-identical anyway. Hashing after resampling is ~7x cheaper than before (24 kHz mono
    vs 44.1 kHz stereo), which matters since hashing is not part of the decode floor.
    """
    samples, decoded = conform(data, settings, name)
    out = Processed(duration_s=decoded.duration_s, decoder=decoded.decoder, note=decoded.note)
    del decoded
    if samples.shape[1] < settings.min_frames:
        out.reason = "too_short"
        out.message = f"{out.duration_s:.2f} s is shorter than the minimum clip of {settings.min_clip_s:g} s"
        return out
    out.pcm_sha1 = audio.pcm_hash(samples)
    out.clips, out.silent_clips = make_clips(samples, settings)
    if not out.clips:
        out.reason = "silent"
        out.message = f"all {out.silent_clips} clips are below {settings.silence_db:g} dBFS"
    return out
