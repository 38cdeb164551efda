"""Words for a track: title, artist, tags and a natural caption built from its ground truth.

Captions vary their sentence shape and wording (several templates, synonyms of each style, instrument and drum kit),
but always name the style label, the mood, the tempo word and BPM, the key, and every instrument label, so a text
encoder trained on them can learn each attribute.
"""

from __future__ import annotations

import numpy as np

from n2m.synth.compose import TrackSpec
from n2m.synth.drums import KITS
from n2m.synth.harmony import key_name
from n2m.synth.instruments import INSTRUMENTS
from n2m.synth.styles import STYLES

_TEMPO_WORDS = ((76, "slow"), (100, "mid-tempo"), (132, "upbeat"), (10_000, "fast"))

_TEMPLATES = (
    "{A_mood} {style} track in {key} at {bpm} BPM: {a_lead} carries the melody over {chords}, {bass} and {drums}.",
    "{Tempo} {style} in {key} with {a_mood} feel, built on {drums} and {bass}, with {chords} under {a_lead} melody.",
    "This {mood}, {tempo} {style} piece ({bpm} BPM, {key}) features {a_lead} melody, {chords}, {bass} and {drums}.",
    "{Mood} {style} music: {a_lead} melody floats over {chords}, {bass} and {drums}, {tempo} at {bpm} BPM in {key}.",
    "{A_tempo} {bpm} BPM {style} song in {key}; {drums} and {bass} drive it while {a_lead} and {chords} set "
    "{a_mood} mood.",
    "Built around {a_lead} melody, this {mood} {style} tune in {key} adds {chords}, {bass} and {drums} at {a_tempo} "
    "{bpm} BPM.",
    "{Mood} and {tempo}, this {style} instrumental in {key} pairs {a_lead} melody with {chords}, {bass} and {drums} "
    "({bpm} BPM).",
    "{A_tempo} {style} groove at {bpm} BPM in {key}: {drums}, {bass}, {chords} and {a_lead} melody, {mood} throughout.",
)

_ADJECTIVES = (
    "Neon", "Velvet", "Midnight", "Golden", "Paper", "Quiet", "Electric", "Crimson", "Silver", "Hollow", "Amber",
    "Distant", "Broken", "Endless", "Northern", "Faded", "Wild", "Glass", "Lunar", "Rusty", "Sunday", "Blue",
)
_NOUNS = (
    "Harbor", "Skyline", "Garden", "Echoes", "Lanterns", "Rain", "Circuit", "Horizon", "Tides", "Avenue", "Meadow",
    "Signal", "Orbit", "Window", "River", "Parade", "Mirror", "Cathedral", "Streetlights", "Waves", "Frost", "Motel",
)
_FIRST = ("Ada", "Milo", "Noor", "Kai", "Lena", "Ravi", "Iris", "Theo", "Yuki", "Sol", "Vera", "Jonas", "Mei", "Otto")
_LAST = ("Hart", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Reyes", "Novak", "Byrne", "Castell", "Weiss", "Adeyemi")


def tempo_word(bpm: float) -> str:
    """``slow`` (< 76 BPM), ``mid-tempo`` (< 100), ``upbeat`` (< 132) or ``fast``."""
    return next(word for limit, word in _TEMPO_WORDS if bpm < limit)


def key_label(spec: TrackSpec) -> str:
    return f"{key_name(spec.tonic)} {spec.mode}"


def instrument_labels(spec: TrackSpec) -> list[str]:
    """Ground-truth instruments, melody first: lead, chords, bass, then ``drums``."""
    return [INSTRUMENTS[spec.lead].label, INSTRUMENTS[spec.chords].label, INSTRUMENTS[spec.bass].label, "drums"]


def tags(spec: TrackSpec) -> list[str]:
    style = STYLES[spec.style]
    out = [style.label, spec.mood, tempo_word(spec.bpm), key_label(spec), *instrument_labels(spec), "instrumental"]
    if style.meter == 3:
        out.append("3/4")
    return out


def _article(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def caption(spec: TrackSpec, rng: np.random.Generator) -> str:
    """One natural sentence describing the track (style, mood, tempo word and BPM, key, instruments)."""
    style = STYLES[spec.style]
    words = {
        "mood": spec.mood,
        "tempo": tempo_word(spec.bpm),
        "style": _pick(style.phrases, rng),
        "key": key_label(spec),
        "bpm": str(spec.bpm),
        "lead": _pick(INSTRUMENTS[spec.lead].phrases, rng),
        "chords": _pick(INSTRUMENTS[spec.chords].phrases, rng) + " " + _pick(("chords", "harmonies", "comping"), rng),
        "bass": _pick(INSTRUMENTS[spec.bass].phrases, rng),
        "drums": _pick(KITS[style.kit].phrases, rng),
    }
    fields = dict(words)
    for name in ("mood", "tempo", "lead"):
        fields[f"a_{name}"] = _article(words[name])
    for name, value in list(fields.items()):
        fields[name[:1].upper() + name[1:]] = value[:1].upper() + value[1:]
    return _pick(_TEMPLATES, rng).format(**fields)


def title(rng: np.random.Generator) -> str:
    adjective, noun = _pick(_ADJECTIVES, rng), _pick(_NOUNS, rng)
    forms = (f"{adjective} {noun}", f"The {noun}", f"{noun} of {_pick(_NOUNS, rng)}", f"{adjective} {noun} II")
    return _pick(forms, rng)


def artist(rng: np.random.Generator) -> str:
    forms = (
        f"{_pick(_FIRST, rng)} {_pick(_LAST, rng)}",
        f"The {_pick(_ADJECTIVES, rng)} {_pick(_NOUNS, rng)}",
        f"{_pick(_ADJECTIVES, rng)} {_pick(_NOUNS, rng)} Trio",
    )
    return _pick(forms, rng)
