"""Cleaning rules that turn raw LLM answers into a usable long-form vocabulary.

Answers are split into sentences, whitespace and casing are normalised, and a sentence is rejected (with one reason from
:data:`REASONS`) when it names the track's title or artist, is a refusal or meta talk rather than a description of the
music, holds a URL, is off-topic (biography, charts, streaming), holds too few letters, or is too short or long. Kept
sentences are deduplicated exactly (same cleaned text) and near-exactly (same text once lower-cased, punctuation
stripped and whitespace collapsed); the first occurrence keeps its provenance. Noise2Music (arXiv 2302.03917, section
3.2) cleaned LaMDA's answers into sentences the same way before using them as pseudo-labels.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from n2m.labeling.vocab.tracks import Track
from n2m.schema import text_id

REASONS = {
    "request_failed": "the backend gave no answer after its retries",
    "empty_response": "the answer held no text",
    "names_title": "names the track's title",
    "names_artist": "names the track's artist",
    "refusal": "a refusal or an admission of not knowing (not about the music)",
    "meta": "talk about the answer itself (\"Here is a description\", \"I hope this helps\")",
    "url": "holds a URL or e-mail address",
    "off_topic": "biography, charts, sales or streaming rather than the sound",
    "not_text": "too few letters to be a sentence",
    "too_short": "fewer words than --min-words",
    "too_long": "more words than --max-words or more than --max-chars characters",
}
EXAMPLES_PER_REASON = 5

_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "approx.", "ca.", "mr.", "mrs.", "ms.", "dr.", "st.", "no.", "vol.",
                  "feat.", "ft.", "incl.")
_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_BULLET = re.compile(r"^\s*(?:[-*\u2022>#]+|\(?\d{1,2}[.)])\s+")
_MARKUP = re.compile(r"[*_`]{1,3}|^#+\s*")
_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)


def _patterns(*items: str) -> re.Pattern:
    return re.compile("|".join(f"(?:{p})" for p in items), re.IGNORECASE)


_URL = _patterns(r"https?://", r"\bwww\.", r"\b[\w.-]+\.(?:com|org|net|io|fm|co|info)\b", r"\b[\w.+-]+@[\w-]+\.\w+")
_REFUSAL = _patterns(
    r"\bas an ai\b", r"\blanguage model\b", r"\bmy (?:knowledge|training)\b", r"\bknowledge cut-?off\b",
    r"\bi (?:can ?not|can't|am unable|am not able|don't have|do not have|couldn't|could not|don't know|do not know)\b",
    r"\bi'?m (?:sorry|unable|not (?:sure|familiar|aware|able))\b", r"\bi (?:apologi[sz]e|am sorry|am not familiar)\b",
    r"\bnot familiar with\b", r"\bno (?:information|data|details|record) (?:about|on|of)\b", r"\bsorry\b",
    r"\bunable to (?:find|locate|provide|access|listen)\b", r"\bwithout (?:listening|hearing|access)\b",
)
_META = _patterns(
    r"^(?:here(?:'s| is| are)|sure|certainly|of course|okay|ok|absolutely|great question)\b",
    r"\b(?:this|the following|my) (?:description|answer|response|summary)\b", r"\bhope (?:this|that|it) helps\b",
    r"\blet me know\b", r"\bfeel free\b", r"\bin (?:summary|conclusion)\b", r"\bto (?:summari[sz]e|conclude)\b",
    r"\b(?:i would|i'd|i will|i'll|let me) (?:describe|say|summari[sz]e|characteri[sz]e)\b",
    r"\b(?:describe|description of) (?:the|this) (?:song|track|music|piece)\b", r"^note:",
)
_OFF_TOPIC = _patterns(
    r"\b(?:was|were) born\b", r"\bborn in\b", r"\b(?:died|passed away)\b", r"\bbillboard\b", r"\bgramm(?:y|ies)\b",
    r"\bawards?\b", r"\brecord (?:label|deal)\b", r"\bsigned (?:to|with)\b", r"\bsold\b.{0,40}\bcopies\b",
    r"\bpeaked at\b", r"\b(?:top|number) (?:\d+|one|ten|forty)\b.{0,20}\bchart", r"\bmusic video\b",
    r"\b(?:spotify|youtube|itunes|apple music|amazon music|soundcloud|bandcamp|streaming)\b", r"\bwikipedia\b",
)


@dataclass(frozen=True)
class CleanRules:
    """Length limits (in words and characters) for a kept sentence."""

    min_words: int = 4
    max_words: int = 60
    max_chars: int = 400


def split_sentences(text: str) -> list[str]:
    """Sentences of an answer: one per line or bullet, then split after ``. ! ?`` (common abbreviations kept whole)."""
    out: list[str] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line).strip()
        if not line:
            continue
        pieces = _SPLIT.split(line)
        merged: list[str] = []
        for piece in pieces:
            if merged and merged[-1].split()[-1].lstrip("(\"'").lower() in _ABBREVIATIONS:
                merged[-1] = f"{merged[-1]} {piece}"
            else:
                merged.append(piece)
        out.extend(p.strip() for p in merged if p.strip())
    return out


def normalise_sentence(sentence: str) -> str:
    """Whitespace collapsed, markdown emphasis and wrapping quotes removed, shouting lower-cased, first letter upper-case,
    final punctuation ensured."""
    text = _MARKUP.sub("", sentence)
    text = " ".join(text.split()).strip(" \"'\u201c\u201d\u2018\u2019")
    letters = [c for c in text if c.isalpha()]
    if letters and all(c.isupper() for c in letters) and len(letters) > 3:
        text = text.lower()
    if text and text[-1] not in ".!?":
        text = text.rstrip(",;:") + "."
    return text[:1].upper() + text[1:]


def near_key(text: str) -> str:
    """The near-duplicate key: lower case, punctuation stripped, whitespace collapsed."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _title_names(title: str) -> list[str]:
    """Normalised forms of a title: whole, and without a bracketed or " - " suffix ("Song (Live) - 2011 Remaster")."""
    bare = re.sub(r"\s*[(\[].*?[)\]]", "", title).split(" - ")[0]
    return sorted(n for n in {near_key(title), near_key(bare)} if len(n) >= 2)


def _artist_names(artist: str) -> list[str]:
    """Normalised forms of an artist: the whole name and, for lists ("A & B", "A feat. B"), each part."""
    parts = re.split(r"\s*(?:,|&|;|/|\+|\bfeat\.?|\bft\.?|\bfeaturing)\s*", artist, flags=re.IGNORECASE)
    return sorted(n for n in {near_key(artist), *(near_key(p) for p in parts)} if len(n) >= 2)


def reject_reason(sentence: str, track: Track, rules: CleanRules) -> str:
    """Why ``sentence`` (already normalised) must not enter the vocabulary, or ``""`` to keep it."""
    key = f" {near_key(sentence)} "
    if any(f" {name} " in key for name in _title_names(track.title)):
        return "names_title"
    if any(f" {name} " in key for name in _artist_names(track.artist)):
        return "names_artist"
    for reason, pattern in (("url", _URL), ("refusal", _REFUSAL), ("meta", _META), ("off_topic", _OFF_TOPIC)):
        if pattern.search(sentence):
            return reason
    if sum(c.isalpha() for c in sentence) < 0.5 * len(sentence.replace(" ", "")):
        return "not_text"
    words = len(sentence.split())
    if words < rules.min_words:
        return "too_short"
    if words > rules.max_words or len(sentence) > rules.max_chars:
        return "too_long"
    return ""


@dataclass
class VocabCollector:
    """Accumulates the kept sentences (``rows`` in ``VOCAB_SCHEMA`` order) and every rejection with its reason."""

    rules: CleanRules = field(default_factory=CleanRules)
    rows: list[dict[str, str]] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    duplicates: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    rejections: list[dict[str, str]] = field(default_factory=list)
    sentences: int = 0
    _exact: set[str] = field(default_factory=set)
    _near: set[str] = field(default_factory=set)

    def _reject(self, reason: str, text: str, provenance: dict[str, str]) -> None:
        self.rejected[reason] += 1
        if len(self.examples[reason]) < EXAMPLES_PER_REASON:
            self.examples[reason].append(text)
        self.rejections.append({"reason": reason, "text": text, **provenance})

    def add_failure(self, error: str, provenance: dict[str, str]) -> None:
        """A request that produced no answer (``error`` is the backend's reason, e.g. ``http_500``)."""
        self._reject("request_failed", error, provenance)

    def add_response(self, response: str, track: Track, provenance: dict[str, str]) -> None:
        """Clean one answer; ``provenance`` = ``{track_id, backend, model, prompt_id}``."""
        sentences = [normalise_sentence(s) for s in split_sentences(response)]
        sentences = [s for s in sentences if s]
        if not sentences:
            self._reject("empty_response", response.strip(), provenance)
            return
        for sentence in sentences:
            self.sentences += 1
            reason = reject_reason(sentence, track, self.rules)
            if reason:
                self._reject(reason, sentence, provenance)
                continue
            near = near_key(sentence)
            if sentence in self._exact:
                self.duplicates["exact"] += 1
                continue
            if near in self._near:
                self.duplicates["near"] += 1
                continue
            self._exact.add(sentence)
            self._near.add(near)
            self.rows.append({"id": text_id(sentence), "text": sentence, "kind": "long", "aspect": "", **provenance})
