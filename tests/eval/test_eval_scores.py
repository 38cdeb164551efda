"""CLAP score pairing and baselines, and the torchmetrics metrics (including a real 2-process gloo reduction)."""

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from eval_helpers import tone

from n2m import audio
from n2m.clap import ClapEmbedder
from n2m.errors import UserError
from n2m.eval import embeddings, frechet
from n2m.eval.audio_sets import Preprocess, embed_files, list_audio
from n2m.eval.clap_score import cosine, derangement, paired_score
from n2m.eval.metrics import ClapScore, FrechetAudioDistance
from n2m.eval.scoring import clap_scores, read_prompts


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_matched_pairs_beat_the_shuffled_baseline():
    rng = np.random.default_rng(0)
    ids = [f"id{i:02d}" for i in range(40)]
    text = _unit(rng.normal(size=(40, 32)))
    audio_vecs = _unit(text + 0.1 * rng.normal(size=(40, 32)))  # each clip near its own prompt
    score = paired_score(dict(zip(ids, audio_vecs)), dict(zip(ids, text)), seed=3)
    expected = float(np.mean(np.sum(audio_vecs * text, axis=1)))
    assert score.mean == pytest.approx(expected, rel=1e-9)
    assert score.mean > 0.8 and score.mean > score.shuffled_mean + 0.6
    assert abs(score.shuffled_mean) < 0.15
    assert score.as_dict() == paired_score(dict(zip(ids, audio_vecs)), dict(zip(ids, text)), seed=3).as_dict()


def test_pairing_is_by_id_not_order():
    rng = np.random.default_rng(1)
    vecs = _unit(rng.normal(size=(5, 8)))
    audio_map = {f"k{i}": vecs[i] for i in range(5)}
    text_map = {f"k{i}": vecs[i] for i in reversed(range(5))}  # same pairs, opposite insertion order
    text_map["extra"] = vecs[0]
    score = paired_score(audio_map, text_map)
    assert score.mean == pytest.approx(1.0)
    assert score.missing_audio == ("extra",) and score.n == 5


def test_derangement_has_no_fixed_points_and_is_seeded():
    for n in (2, 3, 10, 101):
        perm = derangement(n, np.random.default_rng(n))
        assert sorted(perm) == list(range(n)) and not np.any(perm == np.arange(n))
    assert list(derangement(9, np.random.default_rng(4))) == list(derangement(9, np.random.default_rng(4)))


def test_clap_score_through_the_model_matches_a_direct_computation(tmp_path, clap_dir):
    """Files listed in an order unrelated to the prompts; the score must equal embed_audio/embed_text by id."""
    sr = 16000
    prompts = {"zeta": "a calm piano piece", "alpha": "fast techno with drums", "mid": "a sad violin melody"}
    clips = {}
    for i, pid in enumerate(prompts):
        clips[pid] = tone(1.5 + i, sr, 200 * (i + 1), seed=i)
        audio.write(tmp_path / f"{pid}.wav", clips[pid], sr)
    embedder = embeddings.load(f"clap:{clap_dir}")
    gen = embed_files(list_audio(tmp_path), embedder, Preprocess(), None, progress=False)
    rows, section, _ = clap_scores(embedder, prompts, gen, None, seed=0)
    direct = ClapEmbedder.from_pretrained(clap_dir)
    ids = sorted(prompts)
    a = direct.embed_audio([audio.decode(str(tmp_path / f"{i}.wav")).samples for i in ids], sr)
    t = direct.embed_text([prompts[i] for i in ids])
    expected = cosine(a, t)
    got = section["text"]["per_item"]
    np.testing.assert_allclose([got[i] for i in ids], expected, atol=1e-5)
    assert rows["CLAP_score"]["value"] == pytest.approx(expected.mean(), abs=1e-5)


def test_prompts_file_errors(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\nnot json\n')
    with pytest.raises(UserError, match=":2:"):
        read_prompts(bad)
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(UserError, match="duplicate"):
        read_prompts(bad)


# ---------------------------------------------------------------------------------------------------------------------
# torchmetrics


def test_fad_metric_matches_frechet_on_the_same_embeddings():
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(300, 6)), rng.normal(size=(250, 6)) * 1.3 + 0.2
    metric = FrechetAudioDistance(dim=6)
    for chunk in np.array_split(real, 4):
        metric.update(torch.from_numpy(chunk).float(), real=True)
    metric.update(torch.from_numpy(fake).float(), real=False)
    expected = frechet.frechet_distance(frechet.stats_of(real.astype(np.float32)),
                                        frechet.stats_of(fake.astype(np.float32))).value
    assert metric.compute().item() == pytest.approx(expected, rel=1e-6)


def test_clap_metric_is_the_mean_cosine():
    rng = np.random.default_rng(3)
    a, t = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    metric = ClapScore()
    metric.update(torch.from_numpy(a[:7]), torch.from_numpy(t[:7]))
    metric.update(torch.from_numpy(a[7:]), torch.from_numpy(t[7:]))
    assert metric.compute().item() == pytest.approx(cosine(a, t).mean(), rel=1e-12)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(200, 5)), rng.normal(size=(160, 5)) + 0.5
    a, t = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    fad, clap = FrechetAudioDistance(dim=5), ClapScore()
    fad.update(torch.from_numpy(real[rank::world]), real=True)
    fad.update(torch.from_numpy(fake[rank::world]), real=False)
    clap.update(torch.from_numpy(a[rank::world]), torch.from_numpy(t[rank::world]))
    result = np.array([fad.compute().item(), clap.compute().item()])
    np.save(os.path.join(out_dir, f"rank{rank}.npy"), result)
    dist.destroy_process_group()


def test_distributed_reduction_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(200, 5)), rng.normal(size=(160, 5)) + 0.5
    a, t = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    expected = [frechet.frechet_distance(frechet.stats_of(real), frechet.stats_of(fake)).value, cosine(a, t).mean()]
    for rank in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{rank}.npy"), expected, rtol=1e-9)
