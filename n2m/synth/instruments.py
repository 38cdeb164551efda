"""Pitched timbres: six clearly different melodic instruments and four basses, in a registry name -> :class:`Instrument`.

A render function maps ``(freq_hz, n_on, brightness, rng)`` to a float32 note ``[n_on + release]`` of peak about 1:
``n_on`` is how long the key is held (samples), ``brightness`` in [0, 1] shapes the timbre the way playing harder does
(loudness itself is applied by the mixer). Each timbre has its own synthesis method, so they differ in spectrum
(harmonic, inharmonic, odd/even balance) and envelope (percussive decay, flat sustain, slow swell, long ring):

- piano: additive, stretched (inharmonic) partials, two-stage decay, hammer noise
- plucked guitar: Karplus-Strong string (Karplus & Strong 1983; Jaffe & Smith 1983), see :func:`dsp.karplus_strong`
- organ: additive drawbars (16', 8', 5 1/3', 4', 2 2/3', 2', 1'), flat sustain, key click, Leslie tremolo
- synth lead: two detuned band-limited saws through a resonant lowpass, delayed vibrato
- string pad: four detuned saws, slow attack and release, ensemble vibrato, dark lowpass
- bell: two-operator FM with an inharmonic 1:3.5 ratio and a decaying index (Chowning 1973)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from n2m.synth import dsp
from n2m.synth.dsp import SAMPLE_RATE

RenderFn = Callable[[float, int, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Instrument:
    """A timbre. ``label`` is its ground-truth name in manifests; every caption phrase contains the label."""

    label: str
    phrases: tuple[str, ...]
    render: RenderFn
    level: float  # mix gain that evens out loudness between timbres
    register: tuple[int, int]  # MIDI range it sounds good in (melody or bass)


def _samples(seconds: float) -> int:
    return int(seconds * SAMPLE_RATE)


def _normalise(y: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return (y / peak).astype(np.float32) if peak > 0 else y


# ---------------------------------------------------------------------------------------------------------------------
# Melodic timbres


def piano(freq: float, n_on: int, brightness: float, rng: np.random.Generator) -> np.ndarray:
    """Additive piano: partial k at ``k f sqrt(1 + B k^2)`` (stiff-string stretch), louder partials when struck harder."""
    n_on = min(n_on, _samples(4.0))
    n = n_on + _samples(0.3)
    t = dsp.seconds(n)
    stretch = 0.0004 * (freq / 261.6) ** 0.5
    tau1 = float(np.clip(3.0 * (220.0 / freq) ** 0.6, 0.5, 6.0))
    y = np.zeros(n, dtype=np.float32)
    for k in range(1, 13):
        partial = k * freq * np.sqrt(1.0 + stretch * k * k)
        if partial > 0.45 * SAMPLE_RATE:
            break
        amp = k ** -(2.0 - 0.9 * brightness) * abs(np.sin(np.pi * k / 7.3))  # hammer at 1/7 of the string
        tau = tau1 / (1.0 + 0.45 * (k - 1))
        env = 0.55 * np.exp(-t / (0.12 * tau)) + 0.45 * np.exp(-t / tau)
        detune = 1.0 + 0.0006 * (k <= 3)  # two strings beating in the low partials
        tone = dsp.sine(dsp.cycles(partial, n))
        if k <= 3:
            tone = 0.5 * (tone + dsp.sine(dsp.cycles(partial * detune, n)))
        y += np.float32(amp) * env * tone
    hammer = dsp.filtered(dsp.noise(rng, _samples(0.012)), "lowpass", 1500 + 3000 * brightness)
    y[: len(hammer)] += 0.08 * hammer * np.linspace(1, 0, len(hammer), dtype=np.float32)
    return _normalise(dsp.damp_after(y, n_on, 0.09))


def plucked(freq: float, n_on: int, brightness: float, rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong string excited by one period of filtered noise, plucked at 1/5 of its length."""
    n_on = min(n_on, _samples(3.0))
    n = n_on + _samples(0.15)
    period = int(SAMPLE_RATE / freq)
    burst = dsp.one_pole_lowpass(dsp.noise(rng, period), 0.75 - 0.5 * brightness)
    pick = max(1, period // 5)
    burst[pick:] -= 0.8 * burst[:-pick]
    decay = float(np.clip(3.0 * (196.0 / freq) ** 0.5, 1.0, 6.0))
    y = dsp.karplus_strong(burst - burst.mean(), freq, decay, n)
    return _normalise(dsp.damp_after(y, n_on, 0.06))


_DRAWBARS = ((1, 0.55), (2, 1.0), (3, 0.6), (4, 0.7), (6, 0.35), (8, 0.45), (16, 0.25))  # multiples of f/2, levels


def organ(freq: float, n_on: int, brightness: float, rng: np.random.Generator) -> np.ndarray:
    """Tonewheel organ: sine drawbars at 16', 8', 5 1/3', 4', 2 2/3', 2', 1'; no decay while held; Leslie tremolo."""
    n = n_on + _samples(0.06)
    base = dsp.cycles(freq / 2.0, n)
    y = np.zeros(n, dtype=np.float32)
    for multiple, level in _DRAWBARS:
        if multiple * freq / 2.0 < 0.45 * SAMPLE_RATE:
            y += np.float32(level * (1.0 if multiple <= 4 else 0.5 + 0.5 * brightness)) * dsp.sine(base * multiple)
    t = dsp.seconds(n)
    y *= 1.0 + 0.18 * np.sin(np.float32(2 * np.pi * 6.3) * t)
    click = dsp.filtered(dsp.noise(rng, _samples(0.004)), "highpass", 2000)
    y[: len(click)] += 0.3 * click
    return _normalise(y * dsp.adsr(n_on, n, 0.006, 1.0, 1.0, 0.03))


def synth_lead(freq: float, n_on: int, brightness: float, rng: np.random.Generator) -> np.ndarray:
    """Two saws 7 cents apart, resonant lowpass at a multiple of the pitch, vibrato after 0.2 s."""
    n = n_on + _samples(0.15)
    y = np.zeros(n, dtype=np.float32)
    for cents in (-7.0, 7.0):
        f = dsp.vibrato(freq * 2 ** (cents / 1200), n, 5.5, 0.006, delay_s=0.2)
        y += dsp.saw(dsp.cycles(f, n) + rng.random(), f / SAMPLE_RATE)
    cutoff = min(freq * (5.0 + 6.0 * brightness), 9000.0)
    y = dsp.resonant_lowpass(y, cutoff, 2.5)
    return _normalise(y * dsp.adsr(n_on, n, 0.008, 0.25, 0.75, 0.1))


def string_pad(freq: float, n_on: int, brightness: float, rng: np.random.Generator) -> np.ndarray:
    """Ensemble strings: four saws at +-4 and +-11 cents with their own vibrato, 0.45 s swell, 0.7 s release."""
    n = n_on + _samples(0.9)
    y = np.zeros(n, dtype=np.float32)
    for cents, rate in ((-11.0, 4.7), (-4.0, 5.3), (4.0, 5.9), (11.0, 4.3)):
        f = dsp.vibrato(freq * 2 ** (cents / 1200), n, rate, 0.003)
        y += dsp.saw(dsp.cycles(f, n) + rng.random(), f / SAMPLE_RATE)
    y = dsp.filtered(y, "lowpass", min(freq * 4.0, 2200.0 + 1500.0 * brightness), order=2)
    return _normalise(y * dsp.adsr(n_on, n, 0.45, 0.8, 0.85, 0.7))


def bell(freq: float, n_on: int, brightness: float, rng: np.random.Generator) -> np.ndarray:
    """FM bell: carrier f, modulator 3.5 f, index decaying from 2-4; a second 2.76 f partial; rings past the note."""
    n = max(n_on, _samples(0.3)) + _samples(1.5)
    t = dsp.seconds(n)
    tau = float(np.clip(1.8 * (440.0 / freq) ** 0.5, 0.7, 3.5))
    index = (2.0 + 2.0 * brightness) * np.exp(-t / (0.35 * tau))
    y = dsp.fm(freq, 3.5, index, n) * np.exp(-t / tau)
    y += 0.35 * dsp.sine(dsp.cycles(2.76 * freq, n)) * np.exp(-t / (0.4 * tau))
    attack = min(n, _samples(0.002))
    y[:attack] *= np.linspace(0, 1, attack, dtype=np.float32)
    return _normalise(y)


# ---------------------------------------------------------------------------------------------------------------------
# Basses


def electric_bass(freq: float, n_on: int, brightness: float, rng: np.random.Generator) -> np.ndarray:
    """Finger bass: a long Karplus-Strong string with a round excitation, lowpassed."""
    n_on = min(n_on, _samples(3.0))
    n = n_on + _samples(0.08)
    period = int(SAMPLE_RATE / freq)
    burst = dsp.one_pole_lowpass(dsp.noise(rng, period), 0.9 - 0.2 * brightness)
    y = dsp.karplus_strong(burst - burst.mean(), freq, 4.0, n)
    y = dsp.filtered(y, "lowpass", 1800.0)
    return _normalise(dsp.damp_after(y, n_on, 0.04))


def synth_bass(freq: float, n_on: int, brightness: float, rng: np.random.Generator) -> np.ndarray:
    """Saw through a resonant lowpass whose cutoff sits a few harmonics up, with a sine sub an octave below."""
    n = n_on + _samples(0.06)
    y = dsp.saw(dsp.cycles(freq, n), freq / SAMPLE_RATE) + 0.6 * dsp.sine(dsp.cycles(freq / 2, n))
    y = dsp.resonant_lowpass(y, freq * (3.0 + 5.0 * brightness), 3.0)
    return _normalise(y * dsp.adsr(n_on, n, 0.004, 0.2, 0.6, 0.04))


def sub_bass(freq: float, n_on: int, brightness: float, rng: np.random.Generator) -> np.ndarray:
    """Sine with a little second harmonic, saturated: the deep electronic bass."""
    n = n_on + _samples(0.05)
    phase = dsp.cycles(freq, n)
    y = dsp.soft_clip(dsp.sine(phase) + 0.15 * dsp.sine(2 * phase), 1.5 + brightness)
    return _normalise(y * dsp.adsr(n_on, n, 0.005, 0.5, 0.9, 0.04))


def upright_bass(freq: float, n_on: int, brightness: float, rng: np.random.Generator) -> np.ndarray:
    """Acoustic bass: a short, dark Karplus-Strong string with a thump."""
    n_on = min(n_on, _samples(2.0))
    n = n_on + _samples(0.1)
    period = int(SAMPLE_RATE / freq)
    burst = dsp.one_pole_lowpass(dsp.noise(rng, period), 0.95)
    y = dsp.karplus_strong(burst - burst.mean(), freq, 1.2, n)
    y = dsp.filtered(y, "lowpass", 900.0)
    return _normalise(dsp.damp_after(y, n_on, 0.05))


INSTRUMENTS: dict[str, Instrument] = {
    "piano": Instrument("piano", ("piano", "soft piano", "grand piano", "bright piano"), piano, 0.9, (60, 84)),
    "pluck": Instrument(
        "plucked guitar", ("plucked guitar", "fingerpicked plucked guitar", "nylon plucked guitar"), plucked, 1.0, (57, 81)
    ),
    "organ": Instrument("organ", ("organ", "drawbar organ", "vintage organ", "warm organ"), organ, 0.55, (55, 79)),
    "lead": Instrument("synth lead", ("synth lead", "buzzy synth lead", "sawtooth synth lead"), synth_lead, 0.5, (60, 84)),
    "pad": Instrument("string pad", ("string pad", "lush string pad", "soft string pad"), string_pad, 0.65, (55, 79)),
    "bell": Instrument("bell", ("bell", "chiming bell", "bright FM bell", "glassy bell"), bell, 0.8, (67, 91)),
    "electric_bass": Instrument("electric bass", ("electric bass", "fingered electric bass"), electric_bass, 1.0, (28, 45)),
    "synth_bass": Instrument("synth bass", ("synth bass", "squelchy synth bass"), synth_bass, 0.8, (28, 45)),
    "sub_bass": Instrument("sub bass", ("sub bass", "deep sub bass"), sub_bass, 0.85, (28, 43)),
    "upright_bass": Instrument("upright bass", ("upright bass", "walking upright bass"), upright_bass, 1.0, (28, 45)),
}

MELODIC = ("piano", "pluck", "organ", "lead", "pad", "bell")  # the six timbres a track's melody is played on
