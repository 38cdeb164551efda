"""Styles and moods as data: tempo ranges, metre, swing, drum/bass/comping/melody rhythm patterns, timbre choices.

Pattern strings have one character per sixteenth note (16 per 4/4 bar, 12 per 3/4 bar) and may span several bars; they
repeat through a section. Drums: ``x`` accent, ``o`` normal, ``g`` ghost, ``.`` nothing. Bass: ``R`` root, ``F`` fifth,
``O`` octave, ``T`` third, ``A`` a semitone below the next chord's root, ``-`` holds the previous note, ``.`` rests.
Comping and melody: ``x`` starts a note (chord), ``-`` holds it, ``.`` rests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DrumPattern = dict[str, str]  # kit voice -> steps


@dataclass(frozen=True)
class Style:
    """A style. ``label`` is its ground-truth name; every caption phrase for it contains the label."""

    label: str
    phrases: tuple[str, ...]
    bpm: tuple[int, int]  # quarter-note tempo range, inclusive
    meter: int  # quarter-note beats per bar
    swing: float  # delay of every second sixteenth, as a fraction of a sixteenth
    kit: str  # key of n2m.synth.drums.KITS
    main: DrumPattern  # verses
    busy: DrumPattern  # choruses
    fill: DrumPattern  # last bar before a chorus (merged over ``main``)
    bass: tuple[str, ...]
    comp: tuple[str, ...]
    melody: tuple[str, ...]  # one-bar rhythm cells
    chords: dict[str, float]  # chord instrument id -> weight
    basses: dict[str, float]  # bass instrument id -> weight
    moods: tuple[str, ...]
    harmony: str  # key of n2m.synth.harmony.VOICINGS
    bars_per_chord: int
    reverb: float  # send level into the reverb
    reverb_s: float  # reverb decay (RT60)
    humanise_s: float  # standard deviation of timing jitter
    effects: tuple[str, ...] = ()  # keys of n2m.synth.render.EFFECTS applied to the mix
    mix: dict[str, float] = field(default_factory=dict)  # part -> RMS level in dB, overriding MIX_DB


MIX_DB = {"melody": -17.0, "chords": -23.0, "bass": -20.0, "drums": -17.0}  # RMS of each part before mastering


STYLES: dict[str, Style] = {
    "ambient": Style(
        "ambient", ("ambient", "ethereal ambient", "drifting ambient"), (60, 78), 4, 0.0, "ambient",
        main={"kick": "x.......o.......", "hat": "..o...o...o...o.", "snare": "............o..."},
        busy={"kick": "x.......o.......", "hat": "o.o.o.o.o.o.o.o.", "snare": "....o.......o..."},
        fill={},
        bass=("R---------------", "R-------F-------"), comp=("x---------------",),
        melody=("x---------------", "x-------x-------", "x-----------x---", "x-------x---x---"),
        chords={"pad": 1.0, "organ": 0.3, "piano": 0.4, "bell": 0.3}, basses={"sub_bass": 1.0, "synth_bass": 0.3},
        moods=("calm", "dreamy", "mysterious", "melancholic"), harmony="add9", bars_per_chord=2,
        reverb=0.55, reverb_s=3.5, humanise_s=0.0, mix={"drums": -26.0, "chords": -20.0, "bass": -22.0},
    ),
    "lofi": Style(
        "lo-fi", ("lo-fi", "lo-fi hip hop", "chilled lo-fi"), (70, 90), 4, 0.3, "lofi",
        main={"kick": "x......x..x.....", "snare": "....x.......x...", "hat": "x.x.x.x.x.x.x.x."},
        busy={"kick": "x......x..x..x..", "snare": "....x.......x..g", "hat": "x.xgx.x.x.xgx.x."},
        fill={"snare": "....x.......x.x."},
        bass=("R-----.R--F-----", "R-------.-F---O-"), comp=("x-----------x---", "x-------x-------"),
        melody=("x-----x-x-------", "--x---x---x-----", "x---x-----x-x---", "x-x-----x-------"),
        chords={"piano": 1.0, "pad": 0.4, "pluck": 0.6, "organ": 0.3},
        basses={"upright_bass": 1.0, "electric_bass": 0.6, "sub_bass": 0.4},
        moods=("nostalgic", "relaxed", "melancholic", "dreamy"), harmony="seventh", bars_per_chord=1,
        reverb=0.2, reverb_s=1.2, humanise_s=0.006, effects=("vinyl",),
    ),
    "waltz": Style(
        "waltz", ("waltz", "gentle waltz", "three-four waltz"), (96, 156), 3, 0.0, "brushes",
        main={"kick": "x...........", "snare": "....o...o...", "hat": "x...o...o..."},
        busy={"kick": "x.......o...", "snare": "....x...x...", "hat": "x...x.o.x.o."},
        fill={"snare": "....x...x.x."},
        bass=("R---........F---........",), comp=("....x-..x-..",),
        melody=("x-------x---", "x---x---x---", "x-----x-x-x-", "x-----------", "x---x-x-x---"),
        chords={"piano": 1.0, "pad": 0.6, "pluck": 0.5, "organ": 0.4}, basses={"upright_bass": 1.0, "electric_bass": 0.3},
        moods=("romantic", "elegant", "melancholic", "playful"), harmony="triad", bars_per_chord=1,
        reverb=0.3, reverb_s=1.8, humanise_s=0.008,
    ),
    "funk": Style(
        "funk", ("funk", "old-school funk", "tight funk"), (96, 116), 4, 0.08, "funk",
        main={"kick": "x.....x...x..x..", "snare": "....x..g.g..x..g", "hat": "xgogxgogxgogxgog"},
        busy={"kick": "x..x..x...x..x..", "snare": "....x..g.g..x.gg", "hat": "xgogxgogxgogxg.g",
              "open_hat": "..............x."},
        fill={"snare": "....x..g.gx.xgxx"},
        bass=("R..R..O.R.F..RT.", "R.RO..R.F..R.OR."), comp=("..x..x.x..x..x..", ".x.x..x...x.x..."),
        melody=("x.xx..x.x.x..x..", "..x.x.x...xx.x..", "x..x..x.x.x.x...", "x.x.x...x..x.x.."),
        chords={"organ": 1.0, "piano": 1.0, "pluck": 1.0}, basses={"electric_bass": 1.0, "synth_bass": 0.5},
        moods=("groovy", "playful", "happy", "confident"), harmony="seventh", bars_per_chord=1,
        reverb=0.08, reverb_s=0.9, humanise_s=0.004,
    ),
    "rock": Style(
        "rock", ("rock", "driving rock", "garage rock"), (110, 150), 4, 0.0, "rock",
        main={"kick": "x.......x.x.....", "snare": "....x.......x...", "hat": "x.o.x.o.x.o.x.o."},
        busy={"kick": "x.....x.x.x...o.", "snare": "....x..g....x...", "open_hat": "x.o.x.o.x.o.x.o."},
        fill={"snare": "....x...x.x.xxxx", "tom": "........o.o....."},
        bass=("R-R-R-R-R-R-R-R-", "R-R-R-R-R-R-F-O-"), comp=("x-x-x-x-x-x-x-x-", "x-----x-x-----x-"),
        melody=("x-x-x-x-x---x-x-", "x---x-x-x-------", "x-x-x---x-x-x---", "x-------x-x-x-x-"),
        chords={"pluck": 1.0, "organ": 1.0, "piano": 0.6}, basses={"electric_bass": 1.0, "synth_bass": 0.3},
        moods=("energetic", "aggressive", "uplifting", "dark"), harmony="triad", bars_per_chord=1,
        reverb=0.15, reverb_s=1.4, humanise_s=0.005,
    ),
    "electronic": Style(
        "electronic", ("electronic", "electronic dance", "house-style electronic"), (120, 132), 4, 0.0,
        "electronic",
        main={"kick": "x...x...x...x...", "clap": "....x.......x...", "open_hat": "..x...x...x...x.",
              "hat": "gggggggggggggggg"},
        busy={"kick": "x...x...x...x...", "clap": "....x.......x...", "open_hat": "..x...x...x...x.",
              "hat": "gogggogggogggogg"},
        fill={"clap": "....x...x.x.xxxx"},
        bass=("..R-..R-..R-..R-", "R.R..RO.R.R..RO."), comp=("..x...x...x...x.", "x---------------"),
        melody=("x-x-x-x-x-x-x-x-", "x--x--x-x--x--x-", "x-x.x-x.x-x.x-x.", "x---x--x--x-x---"),
        chords={"pad": 1.0, "piano": 0.5, "organ": 0.5, "pluck": 0.5}, basses={"sub_bass": 1.0, "synth_bass": 1.0},
        moods=("euphoric", "energetic", "hypnotic", "dark"), harmony="triad", bars_per_chord=1,
        reverb=0.2, reverb_s=1.6, humanise_s=0.0, effects=("sidechain",), mix={"drums": -15.0, "bass": -18.0},
    ),
    "drum_and_bass": Style(
        "drum and bass", ("drum and bass", "liquid drum and bass", "rolling drum and bass"), (160, 178), 4, 0.0,
        "breakbeat",
        main={"kick": "x.......x.......", "snare": "....x.......x...", "hat": "x.o.x.o.x.o.x.o."},
        busy={"kick": "x.......x.x.....", "snare": "....x..g....x.g.", "hat": "xgogxgogxgogxgog"},
        fill={"snare": "....x..x.x.xxxxx"},
        bass=("R-------------F-", "R-----R---....F-"), comp=("x-------------------------------",),
        melody=("x-------x---x---", "x---x---x-------", "x-----------x---", "x-x-----x-------"),
        chords={"pad": 1.0, "piano": 0.5, "bell": 0.3}, basses={"sub_bass": 1.0, "synth_bass": 1.0},
        moods=("energetic", "dark", "tense", "euphoric"), harmony="add9", bars_per_chord=2,
        reverb=0.25, reverb_s=2.0, humanise_s=0.0, mix={"drums": -15.0, "bass": -18.0},
    ),
}


@dataclass(frozen=True)
class Mood:
    """A mood: how likely a minor key is and its energy in [-1, 1] (tempo within the style's range, loudness, brightness)."""

    label: str
    minor: float
    energy: float


MOODS: dict[str, Mood] = {
    m.label: m
    for m in (
        Mood("calm", 0.3, -0.8), Mood("dreamy", 0.3, -0.6), Mood("mysterious", 0.85, -0.4),
        Mood("melancholic", 0.9, -0.4), Mood("nostalgic", 0.6, -0.3), Mood("relaxed", 0.3, -0.5),
        Mood("romantic", 0.3, -0.2), Mood("elegant", 0.3, 0.0), Mood("playful", 0.1, 0.3), Mood("groovy", 0.4, 0.4),
        Mood("happy", 0.0, 0.4), Mood("confident", 0.3, 0.5), Mood("uplifting", 0.1, 0.6), Mood("energetic", 0.4, 0.8),
        Mood("aggressive", 0.8, 1.0), Mood("dark", 0.95, 0.5), Mood("euphoric", 0.2, 0.8), Mood("tense", 0.9, 0.6),
        Mood("hypnotic", 0.6, 0.3),
    )
}
