"""``n2m vocab``: make caption vocabularies (``generate`` long-form from an LLM, ``aspects`` short-form) and ``show`` them.

Examples::

    n2m vocab generate --from OUT/sources.parquet --llm hf:models/qwen2.5-1.5b-instruct --out vocab/lf.parquet
    n2m vocab generate --from manifest.jsonl --llm openai:http://127.0.0.1:8000/v1 --model NAME --out vocab/lf.parquet
    n2m vocab generate --from demo/corpus/manifest.jsonl --llm template --out vocab/demo_lf.parquet
    n2m vocab aspects --out vocab/aspects.parquet --extra my_tags.txt
    n2m vocab show vocab/lf.parquet

The jobs, functions of their typed settings: :func:`n2m.labeling.vocab.generate.run_generate`,
:func:`n2m.labeling.vocab.aspects.run_aspects`, :func:`n2m.labeling.vocab.show.run_show`.
"""

from __future__ import annotations

import argparse

from n2m.config import FRACTION, NONNEGATIVE, NONNEGATIVE_INT, POSITIVE, POSITIVE_INT, job, leaf, number


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    io = p.add_argument_group("input and output")
    io.add_argument("--from", dest="from", metavar="FILE",
                    help="(required) a build's sources.parquet (status ok rows; metadata from meta_json) or a manifest "
                         "(.csv/.tsv/.jsonl/.parquet) with title/artist/tags columns, e.g. n2m synth's manifest.jsonl")
    io.add_argument("--out", metavar="vocab/NAME.parquet",
                    help="(required) the vocabulary table; NAME.json (summary) and NAME.rejected.jsonl are written next to it")
    io.add_argument("--max-tracks", type=POSITIVE_INT, default=None, metavar="N", help="use only the first N usable tracks")
    io.add_argument("--exclude-holdout", action="store_true",
                    help="skip tracks whose 'holdout' field is true (keeps held-out tracks out of the vocabulary)")
    io.add_argument("--cache", default=None, metavar="FILE",
                    help="SQLite response cache (default: llm_cache.sqlite next to --out); re-runs never re-query")
    io.add_argument("--no-cache", action="store_true", help="keep answers in memory only (nothing survives a crash)")
    io.add_argument("--dry-run", action="store_true", help="print the resolved config and the first prompt, then stop")

    llm = p.add_argument_group("LLM backend")
    llm.add_argument("--llm", metavar="BACKEND",
                     help="(required) hf:DIR (local transformers causal LM), openai:http://host:port/v1 (OpenAI-compatible "
                          "server, with --model), or template (scripted sentences from metadata fields; not an LLM)")
    llm.add_argument("--model", default=None, help="openai: the served model name; hf: the directory if not in --llm")
    llm.add_argument("--prompts", default=None, metavar="FILE",
                     help="YAML/JSON prompt templates ({id: template} or a list of {id, template, system}); "
                          "default: describe genre, mood, instrumentation, tempo, era, production without names")
    llm.add_argument("--per-track", type=POSITIVE_INT, default=1, metavar="N", help="answers per track and prompt template")
    llm.add_argument("--temperature", type=NONNEGATIVE, default=0.7, help="sampling temperature (0 = greedy)")
    llm.add_argument("--top-p", type=number(float, low=0, high=1, low_open=True), default=0.95, help="nucleus sampling mass")
    llm.add_argument("--max-new-tokens", type=POSITIVE_INT, default=256, help="longest answer in tokens")
    llm.add_argument("--seed", type=int, default=0, help="sampling seed (part of the cache key)")
    llm.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="hf: prompts per generate() call")
    llm.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"), help="hf: where the model runs")
    llm.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                     help="hf: weights dtype (auto: bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU)")
    llm.add_argument("--concurrency", type=POSITIVE_INT, default=4, help="openai: requests in flight at once")
    llm.add_argument("--timeout", type=POSITIVE, default=120.0, help="openai: seconds to wait for one answer")
    llm.add_argument("--retries", type=NONNEGATIVE_INT, default=4,
                     help="openai: extra attempts after timeouts, 5xx/429 answers or malformed JSON")
    llm.add_argument("--backoff", type=NONNEGATIVE, default=1.0, help="openai: first retry wait in seconds (doubles each time)")
    llm.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                     help="openai: environment variable holding the API key (sent as a Bearer token when set)")
    llm.add_argument("--max-failures", type=FRACTION, default=0.1, metavar="FRAC",
                     help="fail (exit 1, nothing written) when more than this fraction of requests got no answer")

    clean = p.add_argument_group("cleaning")
    clean.add_argument("--min-words", type=POSITIVE_INT, default=4, help="drop sentences with fewer words")
    clean.add_argument("--max-words", type=POSITIVE_INT, default=60, help="drop sentences with more words")
    clean.add_argument("--max-chars", type=POSITIVE_INT, default=400, help="drop sentences with more characters")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def aspect_names(value: str) -> str:
    """``--only-aspects`` / ``--skip-aspects``: comma-separated category names, lower-cased and trimmed (``"Mood, genre"``
    -> ``"mood,genre"``; a string, so that ``--print-config`` writes what ``--config`` reads back)."""
    names = [n.strip().lower() for n in value.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give one or more aspect names, comma-separated (e.g. mood or genre,subgenre)")
    return ",".join(names)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="vocab_command", metavar="ACTION", required=True)

    generate = sub.add_parser("generate", help="long-form sentences from an LLM (or the template generator)",
                              description="Ask an LLM to describe each track's music from its metadata, cache every "
                                          "answer, and clean the answers into a long-form vocabulary.")
    _generate_arguments(generate)
    leaf(generate, job("n2m.labeling.vocab.generate:run_generate"))

    aspects = sub.add_parser("aspects", help="the short-form aspect vocabulary (built-in list plus your own)",
                             description="Write the built-in curated short-form descriptors (genres, moods, "
                                         "instruments, ...) plus extra lists as a short-form vocabulary.")
    aspects.add_argument("--out", metavar="vocab/NAME.parquet", help="(required) the vocabulary table (+ NAME.json)")
    aspects.add_argument("--extra", action="append", metavar="FILE",
                         help="extra descriptors: .txt/.tsv (text[<TAB>aspect] per line), .csv (text[,aspect] or "
                              "MusicCaps' aspect_list column), .jsonl ({text, aspect}); repeat for several files")
    aspects.add_argument("--no-builtin", action="store_true", help="leave out the built-in list (extra files only)")
    which = aspects.add_mutually_exclusive_group()
    which.add_argument("--only-aspects", type=aspect_names, metavar="A[,A...]",
                       help="keep only entries of these aspects (e.g. mood): one aspect as its own vocabulary gets "
                            "its own top-K in n2m label")
    which.add_argument("--skip-aspects", type=aspect_names, metavar="A[,A...]",
                       help="leave out entries of these aspects (e.g. mood, when it has a vocabulary of its own)")
    leaf(aspects, job("n2m.labeling.vocab.aspects:run_aspects"))

    show = sub.add_parser("show", help="size, kinds, examples, duplicates and rejections of a vocabulary",
                          description="Summarise a vocabulary table and its JSON sidecar.")
    show.add_argument("path", metavar="vocab/NAME.parquet", help="a vocabulary written by generate or aspects")
    show.add_argument("--examples", type=NONNEGATIVE_INT, default=8, metavar="N", help="evenly spaced example entries to print")
    show.add_argument("--rejected", action="store_true", help="also print example rejected sentences per reason")
    leaf(show, job("n2m.labeling.vocab.show:run_show"))
