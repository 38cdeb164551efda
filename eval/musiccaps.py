"""The MusicCaps protocol of Noise2Music (arXiv 2302.03917, Section 5), for any caption CSV + reference directory.

Prompts come from the CSV's captions (MusicCaps: ``ytid, start_s, end_s, aspect_list, caption, ..., is_audioset_eval``;
``--subset audioset_eval`` keeps the 2,858 rows of the AudioSet eval split). Reference clips are files named by id
(``{ytid}.wav``, any audio suffix) in a directory the user holds; ids without a reference are listed, never silently
dropped. Generated audio (``{ytid}.wav``, usually 30 s) is scored on its middle 10 s through 16 kHz, as the paper did;
the same preprocessing is applied to the references so both sides see the same band. Reported: FAD_VGG, FAD_CLAP, the
CLAP score (with shuffled-prompt baseline, ground-truth audio score and the references' own score), the spectral
flatness of both sets (:mod:`eval.flatness`: audio or noise?), counts, and what was missing or excluded. With
``--embedding musicnn``: FAD_musicnn and the musicnn adherence section (:mod:`eval.adherence`: tag agreement with the
references; with ``--probe-labels``, the class probe), a judge that needs no CLAP.

``--checkpoints`` generates the audio first through training's public sampling API (``training.sampling.generate``,
what ``n2m sample`` runs), writing ``{id}.wav`` and the same JSON sidecars as ``n2m sample`` into ``OUT/generated``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from eval import report as reports
from eval.audio_sets import Preprocess, by_id, embed_files, list_audio
from eval.options import (
    EMBEDDING_HELP,
    FAD_LABELS,
    add_embedding_options,
    add_fad_options,
    add_output_options,
    add_probe_options,
    cache_root,
    embedding_options,
    fad_options,
    finish,
    model_info,
    out_dir,
    pair_items,
    probe_labels,
)
from n2m.cli import old_spellings
from n2m.config import NONNEGATIVE, POSITIVE_INT, leaf, resolved
from n2m.errors import JobFailed, UserError
from n2m.manifest import TRUE_WORDS, read_rows

SUBSETS = {
    "all": lambda row: True,
    "audioset_eval": lambda row: str(row.get("is_audioset_eval", "")).strip().lower() in TRUE_WORDS,
}
GENERATED_SECONDS = 30.0  # Noise2Music generates 30 s and scores the middle 10 s


def read_captions(path: str | Path, id_column: str = "ytid", caption_column: str = "caption",
                  subset: str = "all") -> tuple[dict[str, str], int]:
    """``({id: caption}, rows in the file)`` of the chosen subset; missing columns and duplicate ids are errors."""
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read captions {path}: {err.strerror}") from err
    with handle:
        reader = _JsonLines(path) if str(path).endswith(".jsonl") else csv.DictReader(handle)
        fields = reader.fieldnames or []
        needed = [id_column, caption_column] + (["is_audioset_eval"] if subset == "audioset_eval" else [])
        absent = [c for c in needed if c not in fields]
        if absent:
            raise UserError(f"{path} lacks column(s) {', '.join(absent)} (has: {', '.join(fields)})")
        keep = SUBSETS[subset]
        prompts: dict[str, str] = {}
        rows = 0
        for number, row in enumerate(reader, 2):
            rows += 1
            if not keep(row):
                continue
            pid, caption = (row[id_column] or "").strip(), (row[caption_column] or "").strip()
            if not pid or not caption:
                raise UserError(f"{path}:{number}: empty {id_column if not pid else caption_column}")
            if pid in prompts:
                raise UserError(f"{path}:{number}: duplicate id {pid!r}")
            prompts[pid] = caption
    if not prompts:
        raise UserError(f"{path}: no captions in subset {subset!r}")
    return prompts, rows


class _JsonLines:
    """JSON lines read like ``csv.DictReader`` (``fieldnames``: the keys of every row; values as strings)."""

    def __init__(self, path: str | Path):
        self.rows = [{k: v if isinstance(v, str) else json.dumps(v) for k, v in row.items()}
                     for row in read_rows(Path(path))]
        self.fieldnames = sorted({k for row in self.rows for k in row})

    def __iter__(self):
        return iter(self.rows)


def _sampling():
    """``training.sampling``, what ``n2m sample`` runs (imported when generating, so ``--help`` stays light)."""
    import training.sampling

    return training.sampling


def generate_seconds(value: str) -> float:
    """``--generate-seconds``: a clip length ``n2m sample`` accepts (``training.sampling.SECONDS``: finite, in
    (0, MAX_SECONDS]); training is imported only when the flag is given."""
    return _sampling().SECONDS(value)


def generate(args: argparse.Namespace, prompts: dict[str, str], out: Path) -> Path:
    """Generate ``{id}.wav`` + ``{id}.json`` sidecars (the ``n2m sample`` format) for every prompt that has none yet,
    through training's public sampling API (``training.sampling.generate``). Re-runs resume. The sampling settings
    are resolved (and a bad sampler refused) before anything is written."""
    from training.cascade import cascade_stages, checkpoint_spec
    from training.sample_files import write_result

    sampling = _sampling()
    options = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps), ("guidance", args.guidance))
               if v is not None}
    settings = sampling.stage_settings(cascade_stages(args.cascade), **options)
    checkpoints = checkpoint_spec(args.checkpoints)
    target = out / "generated"
    target.mkdir(parents=True, exist_ok=True)
    todo = [sampling.Prompt(i, text) for i, text in prompts.items() if not (target / f"{i}.json").is_file()]
    if todo:
        results = sampling.generate(todo, args.cascade, checkpoints, seconds=args.generate_seconds, seed=args.seed,
                                    batch_size=args.batch_size, device=args.device, settings=settings)
        config = {**resolved(args), "seed": args.seed, "cascade": args.cascade, "seconds": args.generate_seconds}
        for result in results:
            write_result(target, result, config)
    print(f"generated {len(todo)} clips ({len(prompts) - len(todo)} already there) in {target}")
    return target


def run(args: argparse.Namespace) -> int:
    from eval import adherence, embeddings, scoring

    specs = ([f"vggish:{args.vggish}"] if args.vggish else []) + ([f"clap:{args.joint_model}"] if args.joint_model else []) \
        + list(args.embedding or [])
    if not specs:
        raise UserError("give --vggish WEIGHTS, --joint-model DIR and/or --embedding musicnn")
    if args.probe_labels and not any(spec.partition(":")[0] == "musicnn" for spec in specs):
        raise UserError("--probe-labels needs --embedding musicnn (the probe's judge)")
    labels = probe_labels(args)
    prompts, rows = read_captions(args.captions, args.id_column, args.caption_column, args.subset)
    out = out_dir(args, "musiccaps")
    generated_dir = Path(args.generated) if args.generated else generate(args, prompts, out)
    ref_by_id = by_id(list_audio(args.reference_audio))
    gen_by_id = by_id(list_audio(str(generated_dir)))
    reference = [ref_by_id[i] for i in prompts if i in ref_by_id]
    generated = [gen_by_id[i] for i in prompts if i in gen_by_id]
    missing = {
        "captions without reference audio": [i for i in prompts if i not in ref_by_id],
        "captions without generated audio": [i for i in prompts if i not in gen_by_id],
        "generated files not in the selected captions": sorted(set(gen_by_id) - set(prompts)),
    }
    if not generated:
        raise JobFailed(f"none of the {len(prompts)} caption ids has a generated file in {generated_dir}")
    if not reference:
        raise JobFailed(f"none of the {len(prompts)} caption ids has a reference file in {args.reference_audio}")

    preprocess = Preprocess(args.crop_seconds, args.band_rate or None)
    report = reports.base_report("musiccaps", out.name, resolved(args))
    report.update(
        preprocess=preprocess.as_dict(), fad={}, models={}, sets={}, warnings=[], missing=missing,
        lineage=reports.lineage(generated),
        counts={"caption_rows": rows, "subset": args.subset, "prompts": len(prompts), "reference_found": len(reference),
                "generated_found": len(generated), **{k: len(v) for k, v in missing.items()}},
    )
    for what, ids in missing.items():
        if ids:
            report["warnings"].append(f"{len(ids)} {what}")
    cache = cache_root(args)
    musicnn = None
    for spec in specs:
        embedder = embeddings.load(spec, embedding_options(args))
        name = embedder.name
        if name in report["models"]:
            raise UserError(f"two {name} models given; musiccaps scores one per kind")
        ref = embed_files(reference, embedder, preprocess, cache, desc=f"{name}: reference")
        gen = embed_files(generated, embedder, preprocess, cache, desc=f"{name}: generated")
        report["models"][name] = model_info(embedder)
        report["sets"][f"reference ({name})"] = ref.summary()
        report["sets"][f"generated ({name})"] = gen.summary()
        rows_, section, warnings = scoring.fad(FAD_LABELS[name], model_info(embedder), ref, gen, fad_options(args))
        report["metrics"].update(rows_)
        report["fad"][name] = section
        report["warnings"] += warnings
        if name == "clap":
            rows_, section, warnings = scoring.clap_scores(embedder, prompts, gen, ref, args.seed, args.bootstrap)
            report["metrics"].update(rows_)
            report["clap_score"] = section
            report["warnings"] += [w for w in warnings if "prompts have no generated audio" not in w]
        if name == "musicnn":
            musicnn = (embedder, gen, ref)
            adherence.judge(report, embedder, gen, ref, labels, preprocess, cache, args.bootstrap, args.seed)
    reports.attach_samples(report, pair_items(generated, reference, prompts), args.samples, args.seed)
    if musicnn is not None:
        adherence.tag_samples(report, musicnn[0], musicnn[1:], preprocess, cache)
    scoring.add_flatness(report, reference, generated, preprocess, cache)
    return finish(report, out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--captions", required=True, help="caption CSV (MusicCaps: musiccaps-public.csv), or JSON lines "
                                                     "(.jsonl, e.g. n2m eval prompts --out: --id-column id "
                                                     "--caption-column text)")
    p.add_argument("--reference-audio", required=True, help="directory of reference clips named by id ({ytid}.wav)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--generated", help="directory of generated audio named by id ({ytid}.wav)")
    source.add_argument("--checkpoints", metavar="DIR|STAGE=PATH,...",
                        help="generate first (into OUT/generated, resumable) through training's sampling API from "
                             "these stage checkpoints (as 'n2m sample --checkpoints')")
    p.add_argument("--subset", default="all", choices=sorted(SUBSETS),
                   help="all rows, or the is_audioset_eval rows (2,858 in MusicCaps)")
    p.add_argument("--id-column", default="ytid", help="CSV column naming the clip id (file stem)")
    p.add_argument("--caption-column", default="caption", help="CSV column with the prompt text")
    p.add_argument("--vggish", metavar="WEIGHTS", help="torchvggish state dict for FAD_VGG")
    old_spellings(p, p.add_argument("--joint-model", metavar="DIR",
                                    help="CLAP model directory for FAD_CLAP and the CLAP score"), "--clap")
    p.add_argument("--embedding", action="append", metavar="NAME[:ARGS]",
                   help="more judges, repeatable: " + EMBEDDING_HELP + ". musicnn adds the adherence section "
                        "(tag agreement with the references; the probe with --probe-labels)")
    gen = p.add_argument_group("generation (with --checkpoints; defaults: the paper's per-stage settings)")
    gen.add_argument("--cascade", default="waveform", choices=("waveform", "spectrogram"), help="which cascade")
    gen.add_argument("--generate-seconds", type=generate_seconds, default=GENERATED_SECONDS,
                     help="length of each generated clip (as n2m sample --seconds); the middle --crop-seconds are "
                          "scored")
    gen.add_argument("--sampler", help="ancestral, ddim or dpmpp for every stage")
    gen.add_argument("--steps", type=POSITIVE_INT, help="sampling steps for every stage")
    gen.add_argument("--guidance", type=NONNEGATIVE, help="classifier-free guidance scale of the text stages")
    gen.add_argument("--batch-size", type=POSITIVE_INT, default=4, help="clips sampled together")
    add_probe_options(p)
    add_fad_options(p)
    add_embedding_options(p)
    add_output_options(p)
    p.set_defaults(crop_seconds=10.0, band_rate=16000)
    leaf(p, run)
