"""Prompt templates: what the LLM is asked about each track.

A template is a ``str.format`` string over the track's fields: ``{title}``, ``{artist}``, ``{tags}`` (comma-joined),
``{track}`` (``"Title" by Artist``, whichever parts exist), ``{tags_hint}`` (`` Tags: a, b.`` or empty) and every manifest
column by name (lists comma-joined, missing values empty). A ``--prompts FILE`` (YAML or JSON) holds either a mapping
``{id: template}`` or a list of ``{id, template, system?}``; each id becomes the ``prompt_id`` provenance of the sentences
it produced. The default follows Noise2Music (arXiv 2302.03917, section 3.2: LaMDA was asked to describe the music of a
song from its title and artist), asking for the aspects a listener hears and forbidding names.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from n2m.errors import UserError
from n2m.labeling.vocab.tracks import Track, as_list

_COMPUTED = ("title", "artist", "tags", "track", "tags_hint")


@dataclass(frozen=True)
class PromptTemplate:
    """One prompt: ``id`` (provenance), ``template`` (the user message) and an optional ``system`` message."""

    id: str
    template: str
    system: str = ""

    def fields(self) -> set[str]:
        """The field names the template refers to."""
        return {name for text in (self.template, self.system) for _, name, _, _ in string.Formatter().parse(text)
                if name}

    def messages(self, track: Track) -> list[dict[str, str]]:
        """The chat messages for one track: ``[{"role": "system", ...}?, {"role": "user", ...}]``."""
        values = track_fields(track)
        out = [{"role": "system", "content": self.system.format_map(values)}] if self.system else []
        return [*out, {"role": "user", "content": self.template.format_map(values)}]


DEFAULT_PROMPTS = (
    PromptTemplate(
        id="describe",
        system="You are a music expert who describes how recordings sound.",
        template=(
            "Describe the music of the song {track}.{tags_hint} Write four to six sentences about how it sounds: its "
            "genre, mood, instrumentation, tempo, era and production. Describe only the music. Do not name the song, "
            "the artist or any other person, and do not write an introduction or a conclusion."
        ),
    ),
)


class _Fields(dict):
    def __missing__(self, key: str) -> str:  # a column this track lacks renders empty
        return ""


def track_fields(track: Track) -> dict[str, str]:
    """Every value a template may use for ``track`` (lists joined by ``", "``)."""
    values = _Fields({str(k): ", ".join(as_list(v)) if isinstance(v, (list, tuple)) else ("" if v is None else str(v))
                      for k, v in track.meta.items()})
    tags = ", ".join(track.tags)
    named = f'"{track.title}"' if track.title else "with these tags"
    values.update(
        title=track.title,
        artist=track.artist,
        tags=tags,
        track=f"{named} by {track.artist}" if track.artist else named,
        tags_hint=f" Tags: {tags}." if tags else "",
    )
    return values


def _parse(data: Any, path: str) -> list[PromptTemplate]:
    if isinstance(data, dict) and "prompts" in data:
        data = data["prompts"]
    if isinstance(data, dict):
        data = [{"id": key, "template": value} for key, value in data.items()]
    if not isinstance(data, list) or not data:
        raise UserError(f"--prompts {path}: expected a mapping of id -> template or a list of {{id, template}}")
    prompts = []
    for entry in data:
        if not isinstance(entry, dict) or not entry.get("id") or not isinstance(entry.get("template"), str):
            raise UserError(f"--prompts {path}: every prompt needs an 'id' and a 'template' string, got {entry!r}")
        unknown = set(entry) - {"id", "template", "system"}
        if unknown:
            raise UserError(f"--prompts {path}: prompt {entry['id']!r} has unknown keys {sorted(unknown)}")
        prompts.append(PromptTemplate(id=str(entry["id"]), template=entry["template"], system=entry.get("system") or ""))
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        raise UserError(f"--prompts {path}: prompt ids must be unique, got {ids}")
    for prompt in prompts:
        try:
            prompt.fields()
        except ValueError as err:
            raise UserError(f"--prompts {path}: prompt {prompt.id!r} is not a valid template: {err}") from err
    return prompts


def load_prompts(path: str | None) -> list[PromptTemplate]:
    """The templates of a ``--prompts`` file (YAML or JSON), or the built-in default when ``path`` is None."""
    if path is None:
        return list(DEFAULT_PROMPTS)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise UserError(f"--prompts {path}: cannot read it: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise UserError(f"--prompts {path}: not valid YAML/JSON: {err}".splitlines()[0]) from err
    return _parse(data, path)


def check_fields(prompts: Sequence[PromptTemplate], tracks: Iterable[Track]) -> None:
    """Fail loudly when a template names a field that no track has (a typo would silently render empty)."""
    known = set(_COMPUTED)
    for track in tracks:
        known.update(str(k) for k in track.meta)
    for prompt in prompts:
        unknown = prompt.fields() - known
        if unknown:
            raise UserError(f"prompt {prompt.id!r} uses fields no track has: {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(sorted(known))})")


def prompts_hash(prompts: Sequence[PromptTemplate]) -> str:
    """SHA-1 of the templates (ids, system and user text), recorded in ``vocab/NAME.json``."""
    return hashlib.sha1(json.dumps([asdict(p) for p in prompts], sort_keys=True).encode()).hexdigest()
