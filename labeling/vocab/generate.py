"""``n2m vocab generate``: ask a backend about every track, cache each answer, clean them into a long-form vocabulary.

One request per (track, prompt template, sample). Answers are cached by (backend, model, prompt, params) the moment they
arrive, so a re-run (or a run after a crash) asks only for what is missing; cleaning always runs over every answer in
input order, so the same answers give the same vocabulary. Failed requests are recorded with their reason and retried
by the next run; the job fails (exit 1) when more than ``--max-failures`` of them failed.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from labeling.vocab.backends import GenerationOptions, Request, make_backend
from labeling.vocab.cache import ResponseCache, cache_key
from labeling.vocab.clean import REASONS, CleanRules, VocabCollector
from labeling.vocab.io import check_out, write_vocab
from labeling.vocab.prompts import PromptTemplate, check_fields, load_prompts, prompts_hash
from labeling.vocab.show import summary_lines
from labeling.vocab.tracks import Track, read_tracks
from n2m.config import resolved
from n2m.errors import JobFailed, UserError
from n2m.provenance import file_hash, now_iso, versions

log = logging.getLogger(__name__)


def build_requests(tracks: list[Track], prompts: list[PromptTemplate], per_track: int) -> list[Request]:
    """Requests in input order: for each track, each prompt template, ``per_track`` samples."""
    return [Request(track=t, prompt_id=p.id, messages=tuple(p.messages(t)), sample=s)
            for t in tracks for p in prompts for s in range(per_track)]


def options_from(args: argparse.Namespace) -> GenerationOptions:
    return GenerationOptions(
        model=args.model, temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
        seed=args.seed, batch_size=args.batch_size, device=args.device, dtype=args.dtype, concurrency=args.concurrency,
        timeout=args.timeout, retries=args.retries, backoff=args.backoff, api_key_env=args.api_key_env,
    )


def _check(args: argparse.Namespace) -> None:
    """What the options' own types cannot say (each number is checked by its argparse type, labeling.vocab.cli)."""
    if args.max_words < args.min_words:
        raise UserError(f"--max-words ({args.max_words}) is below --min-words ({args.min_words})")


def run_generate(args: argparse.Namespace) -> int:
    _check(args)
    started = time.monotonic()
    out = check_out(args.out)
    source = getattr(args, "from")  # dest "from" so a --config YAML can say `from: FILE`
    trackset = read_tracks(source, exclude_holdout=args.exclude_holdout, max_tracks=args.max_tracks)
    if not trackset.tracks:
        raise UserError(f"--from {source}: no usable tracks (skipped: {dict(trackset.skipped) or 'none'})")
    prompts = load_prompts(args.prompts)
    check_fields(prompts, trackset.tracks)
    requests = build_requests(trackset.tracks, prompts, args.per_track)
    if args.dry_run:
        print(f"n2m vocab generate (dry run): {len(trackset.tracks)} tracks x {len(prompts)} prompts x "
              f"{args.per_track} samples = {len(requests)} requests; config: {resolved(args)}")
        print("first request:", list(requests[0].messages))
        return 0

    backend = make_backend(args.llm, options_from(args))
    if args.per_track > 1 and args.temperature == 0 and backend.name != "template":
        log.warning("--per-track %d with --temperature 0: greedy answers repeat, so extra samples add little",
                    args.per_track)
    cache_path = None if args.no_cache else str(args.cache or out.parent / "llm_cache.sqlite")
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
        with tqdm(total=len(requests), initial=len(requests) - len(missing), unit="req", desc="vocab generate",
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
    if failures and len(failures) > args.max_failures * len(requests):
        raise JobFailed(f"{len(failures)} of {len(requests)} requests failed ({dict(failed_by_reason)}); the answers so "
                        f"far are cached{f' in {cache_path}' if cache_path else ''}: re-run to retry only the failed ones")

    rules = CleanRules(min_words=args.min_words, max_words=args.max_words, max_chars=args.max_chars)
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
        "llm": args.llm,
        "backend": backend.name,
        "model": backend.model,
        "backend_info": backend_info,
        "prompts": {"hash": prompts_hash(prompts), "ids": [p.id for p in prompts], "file": args.prompts,
                    "templates": [asdict(p) for p in prompts]},
        "params": {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
                   "seed": args.seed, "per_track": args.per_track},
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
        "config": resolved(args),
        "versions": versions(("requests", "tokenizers")),
        "timings_s": {"read": round(read_s, 3), "generate": round(generate_s, 3)},
    }
    written = write_vocab(out, collector.rows, summary, collector.rejections)
    print("\n".join(summary_lines(written, path=str(out))))
    return 0
