"""More than one generated clip per prompt: ``n2m eval musiccaps --takes DIR``.

A take is one more clip of a selected prompt (usually one that has its ``{id}.wav`` in ``--generated`` too), e.g.
``n2m sample --num-samples 3 --seed 1 --out DIR`` (files ``{id}_0.wav``, ``{id}_1.wav``, ...). Its prompt comes from its
JSON sidecar (``prompt_id``, what ``n2m sample`` writes), never from the file name. Each take is keyed ``take:{path}``
(its path below the folder that holds every take, without the suffix), so it cannot collide with a ``--generated`` id.
A take without a readable sidecar, or whose prompt is not among the selected captions, is left out and listed with its
reason; it never stops the evaluation.

Why: with 14 prompts one clip each, a judge's accuracy moves by 1/14 with every clip, and a second draw from the same
model can land three clips apart. Judging K clips per prompt and taking each prompt's mean keeps the prompt as the unit
of the bootstrap (:mod:`n2m.eval.adherence`) and narrows what sampling alone adds to it.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from n2m.errors import UserError
from n2m.eval.audio_sets import list_audio
from n2m.schema import read_sidecar


@dataclass(frozen=True)
class Takes:
    """The usable takes: ``keys[i]`` (``take:{path}``) of ``paths[i]`` is a clip of prompt ``prompts[i]``; and
    ``left_out``: ``{path: reason}`` for the files that could not be used."""

    keys: tuple[str, ...] = ()
    paths: tuple[Path, ...] = ()
    prompts: tuple[str, ...] = ()
    left_out: dict[str, str] = field(default_factory=dict)

    def prompt_of(self) -> dict[str, str]:
        return dict(zip(self.keys, self.prompts))

    def per_prompt(self) -> dict[str, int]:
        """Takes per prompt id (prompts without a take absent)."""
        return dict(sorted(Counter(self.prompts).items()))


def _prompt_id(path: Path) -> tuple[str | None, str | None]:
    """``(prompt id, None)`` from a clip's sidecar, or ``(None, reason)``."""
    try:
        sidecar = read_sidecar(path)
    except (OSError, ValueError) as err:
        return None, f"unreadable sidecar ({err})"
    if sidecar is None:
        return None, "no JSON sidecar naming its prompt (n2m sample writes one)"
    prompt = sidecar.get("prompt_id")
    if not isinstance(prompt, str) or not prompt:
        return None, "its sidecar has no prompt_id"
    return prompt, None


def read_takes(specs: list[str] | None, prompts: set[str]) -> Takes:
    """The takes in ``specs`` (directories, globs or ``.txt`` lists) of the prompt ids in ``prompts``."""
    if not specs:
        return Takes()
    files = list_audio(list(specs))
    if not files:
        raise UserError(f"--takes {' '.join(specs)}: no audio files found")
    keys, paths, owners, left_out = [], [], [], {}
    root = Path(os.path.commonpath([str(path.parent) for path in files]))
    seen: dict[str, Path] = {}
    for path in files:
        key = "take:" + path.relative_to(root).with_suffix("").as_posix()
        if key in seen:
            raise UserError(f"--takes: {seen[key]} and {path} are the same take in two formats; keep one")
        seen[key] = path
        prompt, reason = _prompt_id(path)
        if prompt is not None and prompt not in prompts:
            prompt, reason = None, f"its prompt {prompt!r} is not among the selected captions"
        if prompt is None:
            left_out[str(path)] = str(reason)
            continue
        keys.append(key)
        paths.append(path)
        owners.append(prompt)
    return Takes(tuple(keys), tuple(paths), tuple(owners), left_out)
