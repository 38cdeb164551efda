"""What ``n2m sample`` writes for one clip: ``ID.wav``, its sidecar ``ID.json`` (the contract of
:data:`n2m.schema.SAMPLE_SIDECAR_FIELDS`) and the kept intermediate stages. ``n2m eval musiccaps`` writes its generated
clips with the same function, so a clip reads the same whichever job made it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from n2m.audio import write as write_audio
from n2m.provenance import now_iso
from n2m.schema import sidecar_path
from n2m.storage import write_bytes_atomic, write_json


def rate_label(rate: int) -> str:
    """3200 -> ``3k2``, 16000 -> ``16k``."""
    whole, rest = divmod(rate, 1000)
    return f"{whole}k{rest // 100 if rest % 100 == 0 else rest}" if rest else f"{whole}k"


def write_result(out: Path, result, args_config: dict[str, Any]) -> list[Path]:
    """``ID.wav`` + its sidecar ``ID.json`` (the fields of :data:`n2m.schema.SAMPLE_SIDECAR_FIELDS`) + intermediates
    (a spectrogram ``[80, frames]`` as ``.npy``, a waveform ``[T]`` as ``.wav``). Every file is written atomically
    (:mod:`n2m.storage`) and the sidecar last: a clip exists when its sidecar does."""
    written = []
    for array, rate in result.stages.values():
        if array.ndim == 2:
            path = out / f"{result.id}.mel.npy"
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            write_bytes_atomic(str(path), buffer.getvalue())
        else:
            path = out / f"{result.id}.{rate_label(rate)}.wav"
            write_audio(path, array[None, :], rate)
        written.append(path)
    wav = out / f"{result.id}.wav"
    write_audio(wav, result.audio[None, :], result.sample_rate)
    meta = result.metadata
    sidecar = {
        "id": result.id,
        "prompt_id": result.prompt.id,
        "prompt": result.prompt.text,
        "audio_prompt": meta.get("audio_prompt"),
        "melody": meta.get("melody"),
        "guidance": meta.get("guidance", {}),
        "sample_index": result.sample_index,
        "seed": result.seed,
        "run_seed": args_config["seed"],
        "sample_rate": result.sample_rate,
        "gain_db": meta.get("gain_db", 0.0),
        "seconds": meta["seconds"],
        "cascade": args_config["cascade"],
        "stages": meta["stages"],
        "sampler_settings": meta["settings"],
        "lineage": {
            "build_ids": sorted({str(s["build_id"]) for s in meta["stages"].values() if s.get("build_id")}),
            "label_sets": sorted({str(s["labels"]) for s in meta["stages"].values() if s.get("labels")}),
        },
        "intermediates": [p.name for p in written],
        "timing": meta["timing"],
        "config": args_config,
        "versions": meta["versions"],
        "created_at": now_iso(),
    }
    write_json(str(sidecar_path(wav)), sidecar)
    return [wav, *written]
