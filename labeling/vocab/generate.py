"""``n2m vocab generate``: ask a backend about every track, cache each answer, clean them into a long-form vocabulary.

One request per (track, prompt template, sample). Answers are cached by (backend, model, prompt, params) the moment they
arrive, so a re-run (or a run after a crash) asks only for what is missing; cleaning always runs over every answer in
input order, so the same answers give the same vocabulary. Failed requests are recorded with their reason and retried
by the next run; the job fails (exit 1) when more than ``max_failures`` of them failed. The job is
:func:`run_generate` of :class:`GenerateSettings` (the command line: :mod:`n2m.labeling.vocab.cli`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from n2m.config import require, resolved
from n2m.errors import JobFailed, UserError
from n2m.labeling.vocab.backends import GenerationOptions, Request, make_backend
from n2m.labeling.vocab.cache import ResponseCache, cache_key
from n2m.labeling.vocab.clean import REASONS, CleanRules, VocabCollector
from n2m.labeling.vocab.io import check_out, write_vocab
from n2m.labeling.vocab.prompts import PromptTemplate, check_fields, load_prompts, prompts_hash
from n2m.labeling.vocab.show import summary_lines
from n2m.labeling.vocab.tracks import Track, read_tracks
from n2m.progress import bar as progress_bar
from n2m.progress import honours_quiet
from n2m.provenance import file_hash, now_iso, versions

log = logging.getLogger(__name__)


def build_requests(tracks: list[Track], prompts: list[PromptTemplate], per_track: int) -> list[Request]:
    """Requests in input order: for each track, each prompt template, ``per_track`` samples."""
    return [Request(track=t, prompt_id=p.id, messages=tuple(p.messages(t)), sample=s)
            for t in tracks for p in prompts for s in range(per_track)]


@dataclass(frozen=True, kw_only=True)
class GenerateSettings:
    """What ``n2m vocab generate`` does: one field per option (``n2m vocab generate --help`` says what each means).
    ``from_`` is the input (``--from``); ``from_``, ``llm`` and ``out`` are required. Each number's own range is checked
    by its flag's type; construction checks what relates fields."""

    from_: str | None = None
    out: str | None = None
    max_tracks: int | None = None
    exclude_holdout: bool = False
    cache: str | None = None
    no_cache: bool = False
    dry_run: bool = False
    llm: str | None = None
    model: str | None = None
    prompts: str | None = None
    per_track: int = 1
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    concurrency: int = 4
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 1.0
    api_key_env: str = "OPENAI_API_KEY"
    max_failures: float = 0.1
    min_words: int = 4
    max_words: int = 60
    max_chars: int = 400
    quiet: bool = False

    def __post_init__(self) -> None:
        require(self, "from_", "llm", "out")
        if self.max_words < self.min_words:
            raise UserError(f"--max-words ({self.max_words}) is below --min-words ({self.min_words})")

    @property
    def options(self) -> GenerationOptions:
        return GenerationOptions(
            model=self.model, temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
            seed=self.seed, batch_size=self.batch_size, device=self.device, dtype=self.dtype,
            concurrency=self.concurrency, timeout=self.timeout, retries=self.retries, backoff=self.backoff,
            api_key_env=self.api_key_env,
        )


@honours_quiet
def run_generate(settings: GenerateSettings) -> int:
    """Ask the backend for every request not cached, clean every answer, write the vocabulary and its summary."""
    started = time.monotonic()
    out = check_out(settings.out)
    source = settings.from_
    trackset = read_tracks(source, exclude_holdout=settings.exclude_holdout, max_tracks=settings.max_tracks)
    if not trackset.tracks:
        raise UserError(f"--from {source}: no usable tracks (skipped: {dict(trackset.skipped) or 'none'})")
    prompts = load_prompts(settings.prompts)
    check_fields(prompts, trackset.tracks)
    requests = build_requests(trackset.tracks, prompts, settings.per_track)
    if settings.dry_run:
        print(f"n2m vocab generate (dry run): {len(trackset.tracks)} tracks x {len(prompts)} prompts x "
              f"{settings.per_track} samples = {len(requests)} requests; config: {resolved(settings)}")
        print("first request:", list(requests[0].messages))
        return 0

    backend = make_backend(settings.llm, settings.options)
    if settings.per_track > 1 and settings.temperature == 0 and backend.name != "template":
        log.warning("--per-track %d with --temperature 0: greedy answers repeat, so extra samples add little",
                    settings.per_track)
    cache_path = None if settings.no_cache else str(settings.cache or out.parent / "llm_cache.sqlite")
    cache = ResponseCache(cache_path)
    read_s = time.monotonic() - started
    failures: dict[str, str] = {}  # cache key -> reason
    retries = 0
    try:
        keys = [cache_key(backend.name, backend.model, list(r.messages), backend.params(r)) for r in requests]
        answers = cache.get_many(keys)
        cached = sum(key in answers for key in keys)
        todo: dict[str, int] = {}  # identical requests (same key) are asked once
        for index, key in enumerate(keys):
            if key not in answers:
                todo.setdefault(key, index)
        missing = list(todo.values())
        with progress_bar(total=len(requests), initial=len(requests) - len(missing), unit="req", desc="vocab generate",
                          disable=None) as bar:
            for j, outcome in backend.generate([requests[i] for i in missing]):
                index = missing[j]
                request = requests[index]
                retries += outcome.attempts - 1
                if outcome.text is None:
                    failures[keys[index]] = outcome.error
                else:
                    answers[keys[index]] = outcome.text
                    cache.put(keys[index], outcome.text, backend=backend.name, model=backend.model,
                              track_id=request.track.track_id, prompt_id=request.prompt_id)
                bar.update(1)
        backend_info = backend.describe()
    finally:
        backend.close()
        cache.close()
    generate_s = time.monotonic() - started - read_s

    failed_by_reason = Counter(failures.values())
    if failures and len(failures) > settings.max_failures * len(requests):
        raise JobFailed(f"{len(failures)} of {len(requests)} requests failed ({dict(failed_by_reason)}); the answers so "
                        f"far are cached{f' in {cache_path}' if cache_path else ''}: re-run to retry only the failed ones")

    rules = CleanRules(min_words=settings.min_words, max_words=settings.max_words, max_chars=settings.max_chars)
    collector = VocabCollector(rules)
    for index, request in enumerate(requests):
        provenance = {"track_id": request.track.track_id, "backend": backend.name, "model": backend.model,
                      "prompt_id": request.prompt_id}
        if keys[index] in failures:
            collector.add_failure(failures[keys[index]], provenance)
        else:
            collector.add_response(answers[keys[index]], request.track, provenance)
    if not collector.rows:
        raise JobFailed(f"no sentence survived cleaning (rejected: {dict(collector.rejected)}); see --min-words/--max-words")

    summary: dict[str, Any] = {
        "name": out.stem,
        "kind": "long",
        "created": now_iso(),
        "input": {"path": str(Path(source).resolve()), "format": trackset.format, "sha1": file_hash(source),
                  "tracks": len(trackset.tracks), "skipped": dict(trackset.skipped)},
        "llm": settings.llm,
        "backend": backend.name,
        "model": backend.model,
        "backend_info": backend_info,
        "prompts": {"hash": prompts_hash(prompts), "ids": [p.id for p in prompts], "file": settings.prompts,
                    "templates": [asdict(p) for p in prompts]},
        "params": {"temperature": settings.temperature, "top_p": settings.top_p, "max_new_tokens": settings.max_new_tokens,
                   "seed": settings.seed, "per_track": settings.per_track},
        "cache": cache_path,
        "requests": {"total": len(requests), "cached": cached, "generated": len(missing) - len(failures),
                     "failed": len(failures), "failed_by_reason": dict(failed_by_reason), "retries": retries},
        "counts": {"tracks": len(trackset.tracks), "sentences": collector.sentences, "kept": len(collector.rows),
                   "rejected": sum(collector.rejected.values()),
                   "duplicates_removed": sum(collector.duplicates.values())},
        "rejected": dict(collector.rejected),
        "rejected_examples": {k: v for k, v in collector.examples.items() if v},
        "rejection_reasons": {k: REASONS[k] for k in collector.rejected},
        "duplicates": {"exact": collector.duplicates["exact"], "near": collector.duplicates["near"]},
        "clean_rules": asdict(rules),
        "config": resolved(settings),
        "versions": versions(("requests", "tokenizers")),
        "timings_s": {"read": round(read_s, 3), "generate": round(generate_s, 3)},
    }
    written = write_vocab(out, collector.rows, summary, collector.rejections)
    print("\n".join(summary_lines(written, path=str(out))))
    return 0
