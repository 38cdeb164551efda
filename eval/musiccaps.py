"""The MusicCaps protocol of Noise2Music (arXiv 2302.03917, Section 5), for any caption CSV + reference directory.

Prompts come from the CSV's captions (MusicCaps: ``ytid, start_s, end_s, aspect_list, caption, ..., is_audioset_eval``;
``--subset audioset_eval`` keeps the 2,858 rows of the AudioSet eval split). Reference clips are files named by id
(``{ytid}.wav``, any audio suffix) in a directory the user holds; ids without a reference are listed, never silently
dropped. Generated audio (``{ytid}.wav``, usually 30 s) is scored on its middle 10 s through 16 kHz, as the paper did;
the same preprocessing is applied to the references so both sides see the same band. Reported: FAD_VGG, FAD_CLAP, the
CLAP score (with shuffled-prompt baseline, ground-truth audio score and the references' own score), the spectral
flatness of both sets (:mod:`n2m.eval.flatness`: audio or noise?), counts, and what was missing or excluded. With
``--embedding musicnn``: FAD_musicnn and the musicnn adherence section (:mod:`n2m.eval.adherence`: tag agreement with the
references; with ``--probe-labels``, the class probe), a judge that needs no CLAP. ``--takes DIR`` adds more clips of
the same prompts (:mod:`n2m.eval.takes`): every FAD and the musicnn adherence judge them with the ``--generated``
clips (each prompt's adherence the mean over its clips); the CLAP score, flatness and the players stay on
``--generated``.

``--checkpoints`` generates the audio first through training's public sampling API (``n2m.training.sampling.generate``,
what ``n2m sample`` runs), writing ``{id}.wav`` and the same JSON sidecars as ``n2m sample`` into ``OUT/generated``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from n2m.config import resolved
from n2m.errors import JobFailed, UserError
from n2m.eval import report as reports
from n2m.eval.audio_sets import Preprocess, by_id, embed_files, list_audio
from n2m.eval.options import (
    EmbeddingSettings,
    FadExtras,
    OutputSettings,
    ProbeSettings,
    cache_root,
    embedding_options,
    fad_label,
    fad_options,
    finish,
    model_info,
    out_dir,
    pair_items,
    probe_labels,
)
from n2m.eval.takes import read_takes
from n2m.manifest import TRUE_WORDS, read_rows
from n2m.progress import honours_quiet

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
    """``n2m.training.sampling``, what ``n2m sample`` runs (imported when generating, so ``--help`` stays light)."""
    import n2m.training.sampling

    return n2m.training.sampling


def generate_seconds(value: str) -> float:
    """``--generate-seconds``: a clip length ``n2m sample`` accepts (``n2m.training.sampling.SECONDS``: finite, in
    (0, MAX_SECONDS]); training is imported only when the flag is given."""
    return _sampling().SECONDS(value)


@dataclass(frozen=True, kw_only=True)
class MusicCapsSettings(ProbeSettings, FadExtras, EmbeddingSettings, OutputSettings):
    """``n2m eval musiccaps``: prompts from ``captions`` (``subset`` of its rows; ``id_column``, ``caption_column``),
    references in ``reference_audio``, generated clips in ``generated`` or made first from ``checkpoints`` (one of
    the two; ``cascade``, ``generate_seconds``, ``sampler``, ``steps``, ``guidance``, ``batch_size`` then apply), judged
    by ``vggish`` (weights), the CLAP ``joint_model`` and each ``embedding``; ``takes``: more clips of the same prompts
    (:mod:`n2m.eval.takes`). Scored on the middle 10 s at 16 kHz."""

    captions: str
    reference_audio: str
    generated: str | None = None
    checkpoints: str | None = None
    takes: list[str] | None = None
    subset: str = "all"
    id_column: str = "ytid"
    caption_column: str = "caption"
    vggish: str | None = None
    joint_model: str | None = None
    embedding: list[str] | None = None
    cascade: str = "waveform"
    generate_seconds: float = GENERATED_SECONDS
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    batch_size: int = 4
    crop_seconds: float | None = 10.0
    band_rate: int | None = 16000

    def __post_init__(self) -> None:
        if (self.generated is None) == (self.checkpoints is None):
            raise UserError("give one of --generated DIR or --checkpoints (to generate first)")
        if self.subset not in SUBSETS:
            raise UserError(f"--subset must be one of {', '.join(sorted(SUBSETS))}, got {self.subset!r}")


def generate(settings: MusicCapsSettings, prompts: dict[str, str], out: Path) -> Path:
    """Generate ``{id}.wav`` + ``{id}.json`` sidecars (the ``n2m sample`` format) for every prompt that has none yet,
    through training's public sampling API (``n2m.training.sampling.generate``). Re-runs resume. The sampling settings
    are resolved (and a bad sampler refused) before anything is written."""
    from n2m.training.cascade import cascade_stages, checkpoint_spec
    from n2m.training.sample_files import write_result

    sampling = _sampling()
    options = {k: v for k, v in (("sampler", settings.sampler), ("steps", settings.steps), ("guidance", settings.guidance))
               if v is not None}
    stages = sampling.stage_settings(cascade_stages(settings.cascade), **options)
    checkpoints = checkpoint_spec(settings.checkpoints)
    target = out / "generated"
    target.mkdir(parents=True, exist_ok=True)
    todo = [sampling.Prompt(i, text) for i, text in prompts.items() if not (target / f"{i}.json").is_file()]
    if todo:
        results = sampling.generate(todo, settings.cascade, checkpoints, seconds=settings.generate_seconds, seed=settings.seed,
                                    batch_size=settings.batch_size, device=settings.device, settings=stages)
        config = {**resolved(settings), "seed": settings.seed, "cascade": settings.cascade, "seconds": settings.generate_seconds}
        for result in results:
            write_result(target, result, config)
    print(f"generated {len(todo)} clips ({len(prompts) - len(todo)} already there) in {target}")
    return target


@honours_quiet
def run_musiccaps(settings: MusicCapsSettings) -> int:
    """Generate (with ``checkpoints``) or read the clips, score them against the references by every judge; the
    report."""
    from n2m.eval import adherence, embeddings, scoring

    specs = ([f"vggish:{settings.vggish}"] if settings.vggish else []) + ([f"clap:{settings.joint_model}"] if settings.joint_model else []) \
        + list(settings.embedding or [])
    if not specs:
        raise UserError("give --vggish WEIGHTS, --joint-model DIR and/or --embedding musicnn")
    if settings.probe_labels and not any(spec.partition(":")[0] == "musicnn" for spec in specs):
        raise UserError("--probe-labels needs --embedding musicnn (the probe's judge)")
    labels = probe_labels(settings)
    prompts, rows = read_captions(settings.captions, settings.id_column, settings.caption_column, settings.subset)
    out = out_dir(settings, "musiccaps")
    generated_dir = Path(settings.generated) if settings.generated else generate(settings, prompts, out)
    ref_by_id = by_id(list_audio(settings.reference_audio))
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
        raise JobFailed(f"none of the {len(prompts)} caption ids has a reference file in {settings.reference_audio}")
    takes = read_takes(settings.takes, set(prompts))
    key_of = dict(zip(map(str, takes.paths), takes.keys))

    preprocess = Preprocess(settings.crop_seconds, settings.band_rate or None)
    report = reports.base_report("musiccaps", out.name, resolved(settings))
    report.update(
        preprocess=preprocess.as_dict(), fad={}, models={}, sets={}, warnings=[], missing=missing,
        lineage=reports.lineage(generated),
        counts={"caption_rows": rows, "subset": settings.subset, "prompts": len(prompts), "reference_found": len(reference),
                "generated_found": len(generated), **{k: len(v) for k, v in missing.items()}},
    )
    for what, ids in missing.items():
        if ids:
            report["warnings"].append(f"{len(ids)} {what}")
    if settings.takes:
        per_prompt = takes.per_prompt()
        report["takes"] = {"sources": list(settings.takes), "clips": len(takes.keys), "per_prompt": per_prompt,
                           "left_out": takes.left_out}
        report["counts"]["takes_found"] = len(takes.keys)
        if takes.left_out:
            path, reason = next(iter(takes.left_out.items()))
            report["warnings"].append(f"{len(takes.left_out)} takes left out, e.g. {path}: {reason}")
    cache = cache_root(settings)
    musicnn = None
    for spec in specs:
        embedder = embeddings.load(spec, embedding_options(settings))
        name = embedder.name
        if name in report["models"]:
            raise UserError(f"two {name} models given; musiccaps scores one per kind")
        ref = embed_files(reference, embedder, preprocess, cache, desc=f"{name}: reference")
        gen = embed_files(generated, embedder, preprocess, cache, desc=f"{name}: generated")
        report["models"][name] = model_info(embedder)
        report["sets"][f"reference ({name})"] = ref.summary()
        report["sets"][f"generated ({name})"] = gen.summary()
        pooled = gen
        if takes.keys:
            more = embed_files(list(takes.paths), embedder, preprocess, cache, desc=f"{name}: takes").rekeyed(key_of)
            report["sets"][f"takes ({name})"] = more.summary()
            pooled = gen + more
        rows_, section, warnings = scoring.fad(fad_label(name), model_info(embedder), ref, pooled, fad_options(settings, settings.seed))
        report["metrics"].update(rows_)
        report["fad"][name] = section
        report["warnings"] += warnings
        if name == "clap":
            rows_, section, warnings = scoring.clap_scores(embedder, prompts, gen, ref, settings.seed, settings.bootstrap)
            report["metrics"].update(rows_)
            report["clap_score"] = section
            report["warnings"] += [w for w in warnings if "prompts have no generated audio" not in w]
        if name == "musicnn":
            musicnn = (embedder, gen, ref)
            adherence.judge(report, embedder, pooled, ref, labels, preprocess, cache, settings.bootstrap, settings.seed,
                            takes.prompt_of() or None)
    reports.attach_samples(report, pair_items(generated, reference, prompts), settings.samples, settings.seed)
    if musicnn is not None:
        adherence.tag_samples(report, musicnn[0], musicnn[1:], preprocess, cache)
    scoring.add_flatness(report, reference, generated, preprocess, cache)
    return finish(report, out)
