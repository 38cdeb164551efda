"""Keys, diatonic chords, progressions and voice-led voicings. Pitches are MIDI note numbers (60 = middle C)."""

from __future__ import annotations

from dataclasses import dataclass

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}  # natural minor

# Four-chord progressions as scale degrees (0 = tonic): I-V-vi-IV, I-IV-V-IV, vi-IV-I-V, ...; i-VI-III-VII, ...
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 3), (5, 3, 0, 4), (0, 5, 3, 4), (1, 4, 0, 0), (0, 2, 3, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 5, 4), (0, 5, 3, 4), (0, 2, 6, 3)),
}

# Chord shapes as scale-step offsets above the chord's degree (0, 2, 4 = a triad stacked in thirds).
VOICINGS = {"triad": (0, 2, 4), "seventh": (0, 2, 4, 6), "add9": (0, 2, 4, 8)}


@dataclass(frozen=True)
class Chord:
    """A chord: ``root`` pitch class (0-11) and its pitch classes ``tones`` (root first)."""

    root: int
    tones: tuple[int, ...]


def key_name(tonic: int) -> str:
    return NOTE_NAMES[tonic % 12]


def scale_pitches(tonic: int, mode: str, low: int, high: int) -> list[int]:
    """Every pitch of the key within ``[low, high]``, ascending."""
    classes = {(tonic + step) % 12 for step in SCALES[mode]}
    return [p for p in range(low, high + 1) if p % 12 in classes]


def diatonic_chord(tonic: int, mode: str, degree: int, shape: str, leading_tone: bool = False) -> Chord:
    """The chord on scale ``degree`` built from ``VOICINGS[shape]``; ``leading_tone`` makes a minor key's v major (V)."""
    scale = SCALES[mode]
    tones = []
    for offset in VOICINGS[shape]:
        step = degree + offset
        pc = (tonic + scale[step % 7]) % 12
        if leading_tone and mode == "minor" and degree == 4 and offset == 2:
            pc = (pc + 1) % 12
        tones.append(pc)
    return Chord(root=tones[0], tones=tuple(tones))


def progression_chords(tonic: int, mode: str, degrees: tuple[int, ...], shape: str) -> list[Chord]:
    """Chords of a progression; in minor, a v that ends the progression becomes V (harmonic minor cadence)."""
    last = len(degrees) - 1
    return [diatonic_chord(tonic, mode, d, shape, leading_tone=i == last) for i, d in enumerate(degrees)]


def voice(chord: Chord, previous: list[int] | None, low: int = 52, high: int = 76) -> list[int]:
    """Close voicing of ``chord`` within ``[low, high]`` that moves least from ``previous`` (voice leading)."""
    candidates = []
    for inversion in range(len(chord.tones)):
        order = chord.tones[inversion:] + chord.tones[:inversion]
        for base_octave in range(low // 12, high // 12 + 1):
            pitches = [base_octave * 12 + order[0]]
            for pc in order[1:]:
                pitches.append(pitches[-1] + ((pc - pitches[-1]) % 12 or 12))
            if pitches[0] >= low and pitches[-1] <= high:
                candidates.append(pitches)
    if not candidates:
        raise ValueError(f"no voicing of {chord} fits in [{low}, {high}]")
    centre = (low + high) / 2.0
    if previous is None:
        return min(candidates, key=lambda c: abs(sum(c) / len(c) - centre))
    target = sorted(previous)
    return min(candidates, key=lambda c: sum(abs(a - b) for a, b in zip(sorted(c), target)) + 0.01 * abs(c[0] - centre))


def nearest_in(pitch: int, classes: tuple[int, ...], low: int, high: int) -> int:
    """The pitch nearest ``pitch`` whose class is in ``classes``, kept within ``[low, high]`` when possible."""
    options = [p for p in range(low, high + 1) if p % 12 in classes]
    return min(options, key=lambda p: (abs(p - pitch), p)) if options else pitch
