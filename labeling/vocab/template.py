"""The ``template`` backend: a deterministic scripted generator, NOT a language model.

It stands in for an LLM that knows a track from its title and artist, for the embedded demo where no LLM can be run: it
composes four to six sentences from the metadata fields (style/genre, mood, instruments, bpm, key/mode, era/year, tags)
with phrasings drawn from ``data/template_phrases.yaml`` by a random generator seeded with (seed, track, prompt, sample).
It never reads the manifest's ``caption`` field, so the vocabulary is not a copy of the ground truth.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from n2m.labeling.vocab.backends import Backend, GenerationOptions, Outcome, Request
from n2m.labeling.vocab.tracks import Track, as_list

_STYLE_FIELDS = ("style", "genre", "subgenre")
_ERA_FIELDS = ("era", "decade", "year")


@lru_cache(maxsize=1)
def _phrase_file() -> str:
    return resources.files("n2m.labeling.vocab.data").joinpath("template_phrases.yaml").read_text(encoding="utf-8")


def _article(word: str) -> str:
    return f"an {word}" if word[:1].lower() in "aeiou" else f"a {word}"


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _squash(word: str) -> str:
    return re.sub(r"[^a-z]", "", word.lower())


def _first(meta: dict[str, Any], names: Sequence[str]) -> str:
    for name in names:
        values = as_list(meta.get(name))
        if values:
            return values[0]
    return ""


def _era(meta: dict[str, Any]) -> str:
    value = _first(meta, _ERA_FIELDS)
    if re.fullmatch(r"(19|20)\d\d", value):
        return f"{value[:3]}0s"
    return value


class TemplateBackend(Backend):
    """Scripted sentences from metadata fields (see the module docstring); labelled ``is_llm: false`` in every output."""

    name = "template"

    def __init__(self, options: GenerationOptions):
        super().__init__(options)
        text = _phrase_file()
        self.phrases = yaml.safe_load(text)
        self.model = f"template-v{self.phrases['version']}@{hashlib.sha1(text.encode()).hexdigest()[:12]}"

    def params(self, request: Request) -> dict[str, Any]:
        return {"seed": self.options.seed, "sample": request.sample}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "is_llm": False,
                "note": "a scripted generator writing from metadata fields (data/template_phrases.yaml); it never "
                        "reads the caption field"}

    def _tempo(self, bpm: float | None, rng: random.Random) -> str:
        if bpm is None:
            return ""
        for band in self.phrases["tempo"]:
            if bpm <= band["max_bpm"]:
                return rng.choice(band["words"])
        return ""

    def compose(self, track: Track, prompt_id: str, sample: int) -> str:
        """The description of one track (empty when its metadata holds nothing to describe)."""
        p, meta = self.phrases, track.meta
        seed = hashlib.sha1(f"{self.options.seed}|{track.track_id}|{prompt_id}|{sample}".encode()).hexdigest()
        rng = random.Random(int(seed[:16], 16))
        tags = [t for t in track.tags if t]
        style = _first(meta, _STYLE_FIELDS) or (tags[0] if tags else "")
        mood = _first(meta, ("mood",))
        instruments = as_list(meta.get("instruments"))
        try:
            bpm = float(meta.get("bpm") or meta.get("tempo") or "nan")
            bpm = bpm if bpm == bpm else None
        except (TypeError, ValueError):
            bpm = None
        tempo = self._tempo(bpm, rng)
        key, mode = _first(meta, ("key",)), _first(meta, ("mode",)).lower()
        era = _era(meta)
        fill = {"style": style or "instrumental", "tempo": tempo or "steady", "mood": mood, "bpm": f"{bpm:.0f}" if bpm else "",
                "key": key, "mode": mode, "era": era, "tags": _join(tags[:4]) if tags else ""}
        fill.update(a_tempo=_article(fill["tempo"]), a_mood=_article(mood) if mood else "")
        sentences: list[str] = []
        if style or tempo or mood:
            sentences.append(rng.choice(p["openers" if mood else "openers_no_mood"]))
        optional: list[str] = []
        if instruments:
            shown = instruments[:]
            rng.shuffle(shown)
            fill["instruments"] = _join(shown[:4])
            optional.append(rng.choice(p["instruments"]))
            if len(instruments) >= 2:
                fill.update(lead=instruments[0], support=instruments[1])
                optional.append(rng.choice(p["lead"]))
        style_phrases = p["styles"].get(_squash(style), p["styles"]["default"])
        optional += [rng.choice(style_phrases["rhythm"]), rng.choice(style_phrases["production"])]
        if bpm:
            optional.append(rng.choice(p["bpm"]))
        if key and mode in p["colour"]:
            fill.update(colour=rng.choice(p["colour"][mode]), colour_noun=rng.choice(p["colour_noun"][mode]))
            optional.append(rng.choice(p["key"]))
        if mood:
            optional.append(rng.choice(p["mood"]))
            optional.append(rng.choice(p["usage"].get(mood.lower(), p["usage"]["default"])))
        if era:
            optional.append(rng.choice(p["era"]))
        if len(tags) >= 2:
            optional.append(rng.choice(p["tags"]))
        if not sentences and not instruments and not tags:
            return ""
        rng.shuffle(optional)
        sentences += optional[:rng.randint(3, 5)]
        out = [s.format(**fill) for s in sentences]
        return " ".join(s[:1].upper() + s[1:] for s in out)

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, Outcome]]:
        for index, request in enumerate(requests):
            text = self.compose(request.track, request.prompt_id, request.sample)
            yield index, Outcome(text) if text else Outcome(None, "no_metadata_fields")
