"""Rendering a :class:`Score` to audio: notes (cached), drums, mix, send reverb, style effects and mastering.

Output is mono float32 ``[1, T]`` at :data:`SAMPLE_RATE` with ``T = round(duration_s * SAMPLE_RATE)``. Notes that repeat
(same instrument, pitch, length and brightness step) are synthesised once and re-used with their own loudness; a drum
voice is synthesised once per round-robin variant. The reverb is a convolution with exponentially decaying noise, run at
16 kHz on the send bus (reverb tails carry little above 8 kHz).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import soxr
from scipy import signal

from n2m.synth import dsp
from n2m.synth.compose import Hit, Note, Score, TrackSpec
from n2m.synth.drums import KITS
from n2m.synth.dsp import SAMPLE_RATE
from n2m.synth.instruments import INSTRUMENTS
from n2m.synth.styles import MIX_DB, MOODS, STYLES

_REVERB_SR = 16_000
_BRIGHTNESS_STEPS = 4


def midi_hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69) / 12.0)


def _place(out: np.ndarray, start: int, clip: np.ndarray, gain: float) -> None:
    """``out[start:start + len] += gain * clip``, cut at the end of ``out``."""
    if start >= len(out):
        return
    end = min(len(out), start + len(clip))
    out[start:end] += np.float32(gain) * clip[: end - start]


def render_part(notes: list[Note], instrument: str, n: int, energy: float, rng: np.random.Generator) -> np.ndarray:
    """Sum of the notes of one instrument, ``[n]``. Brightness follows loudness and the mood's energy."""
    inst = INSTRUMENTS[instrument]
    out = np.zeros(n, dtype=np.float32)
    cache: dict[tuple[int, int, int], np.ndarray] = {}
    for note in notes:
        n_on = max(1, int(round(note.dur_s * SAMPLE_RATE)))
        level = int(round(np.clip(0.5 * note.velocity + 0.25 * energy + 0.2, 0.0, 1.0) * _BRIGHTNESS_STEPS))
        key = (note.pitch, n_on, level)
        if key not in cache:
            cache[key] = inst.render(midi_hz(note.pitch), n_on, level / _BRIGHTNESS_STEPS, rng)
        _place(out, int(round(note.start_s * SAMPLE_RATE)), cache[key], note.velocity * inst.level)
    return out


def render_drums(hits: list[Hit], kit_name: str, n: int, tonic: int, rng: np.random.Generator) -> np.ndarray:
    """Drum bus ``[n]``: every voice synthesised ``variants`` times (pitched drums tuned to ``tonic``), hits cycling."""
    kit = KITS[kit_name]
    sounds = {
        voice: [make(rng, tonic=tonic) if voice in kit.tuned else make(rng) for _ in range(kit.variants)]
        for voice, make in kit.voices.items()
    }
    gains = {"kick": 1.0, "snare": 0.75, "clap": 0.7, "hat": 0.45, "open_hat": 0.3, "crash": 0.35, "tom": 0.6,
             "rim": 0.4}
    out = np.zeros(n, dtype=np.float32)
    counters = dict.fromkeys(sounds, 0)
    for hit in hits:
        variants = sounds[hit.voice]
        clip = variants[counters[hit.voice] % len(variants)]
        counters[hit.voice] += 1
        _place(out, int(round(hit.time_s * SAMPLE_RATE)), clip, hit.velocity * gains.get(hit.voice, 0.5))
    if kit.lowpass_hz:
        out = dsp.filtered(out, "lowpass", kit.lowpass_hz)
    return out


def reverb(send: np.ndarray, decay_s: float, rng: np.random.Generator) -> np.ndarray:
    """Wet signal ``[n]``: ``send`` convolved with decaying noise (RT60 ``decay_s``), computed at 16 kHz."""
    low = soxr.resample(send, SAMPLE_RATE, _REVERB_SR)
    m = int(decay_s * _REVERB_SR)
    t = np.arange(m, dtype=np.float32) / _REVERB_SR
    ir = dsp.noise(rng, m) * np.exp(-6.9 * t / decay_s) * np.clip(t / 0.01, 0, 1)
    ir = signal.sosfilt(signal.butter(1, 5000, fs=_REVERB_SR, output="sos"), ir).astype(np.float32)
    ir /= np.sqrt(np.sum(ir**2))
    wet = signal.oaconvolve(low, ir)[: len(low)].astype(np.float32)
    out = soxr.resample(wet, _REVERB_SR, SAMPLE_RATE)
    full = np.zeros_like(send)
    full[: min(len(out), len(full))] = out[: len(full)]
    return full


def _sidechain(buses: dict[str, np.ndarray], score: Score, rng: np.random.Generator) -> None:
    """Duck chords and bass after every kick (the pumping of dance music)."""
    n = len(buses["drums"])
    duck = np.zeros(n, dtype=np.float32)
    kernel = 0.6 * np.exp(-np.arange(int(0.2 * SAMPLE_RATE), dtype=np.float32) / (0.07 * SAMPLE_RATE))
    for hit in score.drums:
        if hit.voice == "kick":
            _place(duck, int(hit.time_s * SAMPLE_RATE), kernel, 1.0)
    gain = 1.0 - np.minimum(duck, 0.7)
    buses["chords"] *= gain
    buses["bass"] *= gain


def _vinyl(buses: dict[str, np.ndarray], score: Score, rng: np.random.Generator) -> None:
    """Lo-fi record texture on the drum bus: dark tone, crackle and hiss."""
    n = len(buses["drums"])
    crackle = np.zeros(n, dtype=np.float32)
    where = rng.random(n) < 4.0 / SAMPLE_RATE * 8
    crackle[where] = rng.standard_normal(int(where.sum())).astype(np.float32) * 0.4
    crackle = dsp.filtered(crackle, "bandpass", (1000.0, 6000.0)) + 0.004 * dsp.noise(rng, n)
    buses["drums"] += crackle
    for name in ("melody", "chords"):
        buses[name] = dsp.filtered(buses[name], "lowpass", 3500.0)


EFFECTS: dict[str, Callable[[dict[str, np.ndarray], Score, np.random.Generator], None]] = {
    "sidechain": _sidechain,
    "vinyl": _vinyl,
}


def render(score: Score, spec: TrackSpec, rng: np.random.Generator) -> np.ndarray:
    """Mix and master the score: float32 ``[1, round(duration_s * SAMPLE_RATE)]`` in [-1, 1]."""
    style, mood = STYLES[spec.style], MOODS[spec.mood]
    n = int(round(spec.duration_s * SAMPLE_RATE))
    pad = n + 2 * SAMPLE_RATE
    buses = {
        "melody": render_part(score.melody, spec.lead, pad, mood.energy, rng),
        "chords": render_part(score.chords, spec.chords, pad, mood.energy, rng),
        "bass": render_part(score.bass, spec.bass, pad, mood.energy, rng),
        "drums": render_drums(score.drums, style.kit, pad, spec.tonic, rng),
    }
    for name, bus in buses.items():  # balance the parts by their RMS over the whole track
        level = 10 ** (style.mix.get(name, MIX_DB[name]) / 20.0)
        bus *= np.float32(level / max(float(np.sqrt(np.mean(bus**2))), 1e-9))
    for name in style.effects:
        EFFECTS[name](buses, score, rng)
    dry = sum(buses.values())
    send = 0.8 * buses["melody"] + buses["chords"]
    mix = dry + style.reverb * reverb(send, style.reverb_s, rng)
    mix = dsp.filtered(mix, "highpass", 30.0)[:n]
    target_rms = 10 ** ((-19.0 + 3.0 * mood.energy) / 20.0)  # calmer moods are quieter
    mix *= np.float32(target_rms / max(float(np.sqrt(np.mean(mix**2))), 1e-9))
    mix = 0.97 * np.tanh(mix / 0.97)
    fade = min(n, int(1.5 * SAMPLE_RATE))
    mix[n - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32) ** 2
    return mix.astype(np.float32)[None, :]
