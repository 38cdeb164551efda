"""Procedural composition: a :class:`TrackSpec` and a random generator become a :class:`Score` of timed notes and hits.

The form is intro - (verse, chorus, verse, chorus, bridge, chorus ...) - outro, fitted to the duration. Each section type
keeps its own chord progression and melodic motif, so sections recur recognisably; choruses are louder, busier and
higher, bridges quieter, the bar before a chorus swells and the outro fades. The melody develops a two-bar motif (rhythm
cells of the style, a contour of scale steps) over the chords: strong beats land on chord tones, phrases end on a long
chord tone and the piece ends on the tonic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from n2m.synth import harmony
from n2m.synth.drums import KITS
from n2m.synth.instruments import INSTRUMENTS
from n2m.synth.styles import MOODS, STYLES, Style

_DRUM_VELOCITY = {"x": 1.0, "o": 0.7, "g": 0.35}
_CONTOUR_STEPS = np.array([-3, -2, -1, 0, 1, 2, 3])
_CONTOUR_WEIGHTS = np.array([0.05, 0.17, 0.25, 0.08, 0.25, 0.15, 0.05])


@dataclass(frozen=True)
class TrackSpec:
    """What a track is (its ground truth). Instrument fields are keys of :data:`INSTRUMENTS`."""

    style: str  # key of STYLES
    mood: str  # key of MOODS
    tonic: int  # pitch class 0-11
    mode: str  # "major" | "minor"
    bpm: int
    duration_s: float
    lead: str
    chords: str
    bass: str


@dataclass(frozen=True)
class Note:
    start_s: float
    dur_s: float
    pitch: int  # MIDI
    velocity: float  # loudness in (0, ~1.2], dynamics included


@dataclass(frozen=True)
class Hit:
    time_s: float
    voice: str  # kit voice
    velocity: float


@dataclass
class Score:
    melody: list[Note] = field(default_factory=list)
    chords: list[Note] = field(default_factory=list)
    bass: list[Note] = field(default_factory=list)
    drums: list[Hit] = field(default_factory=list)
    sections: list[tuple[str, float]] = field(default_factory=list)  # (name, start_s)


@dataclass(frozen=True)
class Section:
    """A section type: loudness, whether the melody plays, which drum pattern, how far the melody register moves."""

    gain: float
    melody: bool
    drums: str  # "sparse" (kick and hats of the main pattern) | "main" | "busy"
    lift: int


SECTIONS = {
    "intro": Section(0.7, False, "sparse", 0),
    "verse": Section(0.82, True, "main", 0),
    "chorus": Section(1.0, True, "busy", 5),
    "bridge": Section(0.62, True, "sparse", -3),
    "outro": Section(0.72, False, "main", 0),
}
_BODY = (("verse", 8), ("chorus", 8), ("verse", 8), ("chorus", 8), ("bridge", 4), ("chorus", 8))


def plan_form(n_bars: int) -> list[tuple[str, int]]:
    """Sections ``(name, bars)`` filling exactly ``n_bars``: intro and outro from 12 bars on, short sections below."""
    edge = 0 if n_bars < 12 else (2 if n_bars < 40 else 4)
    scale = 1 if n_bars >= 12 else 2
    form = [("intro", edge)] if edge else []
    remaining, i = n_bars - 2 * edge, 0
    while remaining > 0:
        name, bars = _BODY[i % len(_BODY)]
        bars = min(max(1, bars // scale), remaining)
        if remaining - bars < 2 and form and remaining - bars > 0:
            bars = remaining  # no one-bar stub at the end
        form.append((name, bars))
        remaining -= bars
        i += 1
    if edge:
        form.append(("outro", edge))
    return form


@dataclass
class _Motif:
    cells: tuple[str, str]  # two one-bar rhythm cells
    contour: list[int]  # scale steps between onsets
    answer: list[int]


class _Composer:
    def __init__(self, spec: TrackSpec, rng: np.random.Generator):
        self.spec, self.rng = spec, rng
        self.style: Style = STYLES[spec.style]
        self.energy = MOODS[spec.mood].energy
        self.beat_s = 60.0 / spec.bpm
        self.step_s = self.beat_s / 4.0
        self.steps = 4 * self.style.meter
        self.bar_s = self.beat_s * self.style.meter
        self.score = Score()
        self.progressions: dict[str, list[harmony.Chord]] = {}
        self.motifs: dict[str, _Motif] = {}
        self.voicing: list[int] | None = None
        self.last_pitch: int | None = None

    # timing and dynamics -------------------------------------------------------------------------------------------
    def time(self, bar: int, step: int, jitter: bool = True) -> float:
        t = bar * self.bar_s + step * self.step_s + (self.style.swing * self.step_s if step % 2 else 0.0)
        if jitter and self.style.humanise_s > 0:
            t += float(self.rng.normal(0.0, self.style.humanise_s))
        return max(t, 0.0)

    def gain(self, section: str, bar_in: int, bars: int, step: int, next_section: str | None) -> float:
        g = SECTIONS[section].gain
        if next_section == "chorus" and bar_in == bars - 1:
            g *= 0.9 + 0.25 * step / self.steps  # swell into the chorus
        if section == "outro":
            g *= 1.0 - 0.4 * (bar_in * self.steps + step) / (bars * self.steps)
        return g

    # building blocks -----------------------------------------------------------------------------------------------
    def chords_for(self, section: str) -> list[harmony.Chord]:
        if section not in self.progressions:
            pool = harmony.PROGRESSIONS[self.spec.mode]
            degrees = pool[int(self.rng.integers(len(pool)))]
            self.progressions[section] = harmony.progression_chords(
                self.spec.tonic, self.spec.mode, degrees, self.style.harmony
            )
        return self.progressions[section]

    def motif_for(self, section: str) -> _Motif:
        if section not in self.motifs:
            cells = self.style.melody
            pick = self.rng.choice(len(cells), size=2)
            chosen = (cells[pick[0]], cells[pick[1]])
            onsets = sum(c.count("x") for c in chosen)
            draw = lambda: list(self.rng.choice(_CONTOUR_STEPS, size=onsets, p=_CONTOUR_WEIGHTS))  # noqa: E731
            self.motifs[section] = _Motif(chosen, draw(), draw())
        return self.motifs[section]

    @staticmethod
    def events(pattern: str, offset: int, count: int) -> list[tuple[int, str, int]]:
        """``(step, symbol, length_in_steps)`` of the pattern's events in steps ``[offset, offset + count)``."""
        out = []
        for step in range(count):
            symbol = pattern[(offset + step) % len(pattern)]
            if symbol in "-.":
                continue
            length = 1
            while step + length < count and pattern[(offset + step + length) % len(pattern)] == "-":
                length += 1
            out.append((step, symbol, length))
        return out

    # parts ---------------------------------------------------------------------------------------------------------
    def comp_bar(self, bar: int, chord: harmony.Chord, pattern: str, bar_in: int, gain_at, final: bool) -> None:
        self.voicing = harmony.voice(chord, self.voicing)
        strum = 0.012 if self.spec.chords == "pluck" else 0.004
        events = [(0, "x", self.steps)] if final else self.events(pattern, bar_in * self.steps, self.steps)
        for step, _, length in events:
            start = self.time(bar, step)
            velocity = (0.62 + 0.08 * self.energy) * gain_at(step)
            for i, pitch in enumerate(self.voicing):
                dur = length * self.step_s * 0.95
                self.score.chords.append(Note(start + i * strum, dur, pitch, velocity * (1.0 - 0.05 * i)))

    def bass_bar(self, bar: int, chord: harmony.Chord, nxt: harmony.Chord, pattern: str, bar_in: int, gain_at,
                 final: bool) -> None:
        low = INSTRUMENTS[self.spec.bass].register[0]
        root = low + (chord.root - low) % 12
        third = root + (chord.tones[1] - chord.root) % 12
        pitch_of = {"R": root, "F": root + 7, "O": root + 12, "T": third, "A": low + (nxt.root - low) % 12 - 1}
        events = [(0, "R", self.steps)] if final else self.events(pattern, bar_in * self.steps, self.steps)
        for step, symbol, length in events:
            velocity = (0.75 + 0.1 * self.energy + (0.1 if step % 4 == 0 else 0.0)) * gain_at(step)
            pitch = max(pitch_of[symbol], low - 2)
            self.score.bass.append(Note(self.time(bar, step), length * self.step_s * 0.92, pitch, velocity))

    def drum_bar(self, bar: int, section: str, fill: bool, crash: bool, gain_at, final: bool) -> None:
        kit = KITS[self.style.kit].voices
        kind = SECTIONS[section].drums
        if kind == "busy":
            pattern = dict(self.style.busy)
        else:
            pattern = dict(self.style.main)
            if kind == "sparse":
                pattern = {v: s for v, s in pattern.items() if v in ("kick", "hat")}
        if fill:
            pattern.update(self.style.fill)
        if final:
            pattern = {"kick": "x"}
        if crash or final:
            pattern["crash"] = "x"
        for voice, steps in pattern.items():
            if voice not in kit:
                continue
            for step, symbol, _ in self.events(steps, 0, len(steps) if final else self.steps):
                velocity = _DRUM_VELOCITY[symbol] * (0.85 + 0.15 * self.energy) * gain_at(step)
                self.score.drums.append(Hit(self.time(bar, step), voice, velocity))

    def melody_section(self, first_bar: int, bars: int, section: str, chords_at, gain_at_bar) -> None:
        inst = INSTRUMENTS[self.spec.lead]
        low, high = inst.register[0] + SECTIONS[section].lift, inst.register[1] + SECTIONS[section].lift
        scale = harmony.scale_pitches(self.spec.tonic, self.spec.mode, low, high)
        motif = self.motif_for(section)
        pitch = self.last_pitch if self.last_pitch is not None else scale[len(scale) // 2]
        for unit in range(0, bars, 2):
            cadence = unit + 2 >= bars
            cells = (motif.cells[0], "x" + "-" * (self.steps - 1)) if cadence else motif.cells
            contour = motif.answer if (unit // 2) % 2 else motif.contour
            k = 0
            for half in range(min(2, bars - unit)):
                bar = first_bar + unit + half
                chord = chords_at(bar)
                gain_at = gain_at_bar(bar)
                for step, _, length in self.events(cells[half], 0, self.steps):
                    idx = int(np.argmin([abs(p - pitch) for p in scale])) + int(contour[k % len(contour)])
                    k += 1
                    idx = min(max(idx, 0), len(scale) - 1)
                    pitch = scale[idx]
                    if step % 4 == 0 or length >= 8:
                        pitch = harmony.nearest_in(pitch, chord.tones, low, high)
                    if cadence and half == 1:
                        pitch = harmony.nearest_in(pitch, (chord.root,), low, high)
                    accent = 0.08 if step == 0 else 0.0
                    velocity = (0.72 + 0.12 * self.energy + accent + float(self.rng.normal(0, 0.03))) * gain_at(step)
                    dur = length * self.step_s * 0.9
                    self.score.melody.append(Note(self.time(bar, step), dur, pitch, max(velocity, 0.05)))
        self.last_pitch = pitch

    # the whole piece -----------------------------------------------------------------------------------------------
    def compose(self) -> Score:
        n_bars = max(2, int(np.ceil(self.spec.duration_s / self.bar_s)))
        form = plan_form(n_bars)
        tonic = harmony.diatonic_chord(self.spec.tonic, self.spec.mode, 0, self.style.harmony)
        bar = 0
        for index, (section, bars) in enumerate(form):
            next_section = form[index + 1][0] if index + 1 < len(form) else None
            progression = self.chords_for(section)
            first = bar
            self.score.sections.append((section, self.time(first, 0, jitter=False)))

            def chord_at(b: int, progression=progression, first=first) -> harmony.Chord:
                if b == n_bars - 1:
                    return tonic
                return progression[((b - first) // self.style.bars_per_chord) % len(progression)]

            def gain_at_bar(b: int, section=section, first=first, bars=bars, next_section=next_section):
                return lambda step: self.gain(section, b - first, bars, step, next_section)

            for bar_in in range(bars):
                b = first + bar_in
                final = b == n_bars - 1
                chord = chord_at(b)
                nxt = chord_at(b + 1) if not final else tonic
                gain_at = gain_at_bar(b)
                pattern_index = 1 if section == "chorus" else 0
                comp = self.style.comp[pattern_index % len(self.style.comp)]
                bass = self.style.bass[pattern_index % len(self.style.bass)]
                self.comp_bar(b, chord, comp, bar_in, gain_at, final)
                self.bass_bar(b, chord, nxt, bass, bar_in, gain_at, final)
                fill = next_section == "chorus" and bar_in == bars - 1 and bars >= 4
                crash = bar_in == 0 and section in ("chorus", "verse") and b > 0
                self.drum_bar(b, section, fill, crash, gain_at, final)
            if SECTIONS[section].melody:
                self.melody_section(first, bars, section, chord_at, gain_at_bar)
            bar += bars
        return self.score


def compose(spec: TrackSpec, rng: np.random.Generator) -> Score:
    """Compose the track described by ``spec`` (deterministic given the generator's state)."""
    return _Composer(spec, rng).compose()
