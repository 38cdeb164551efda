"""The WebDataset data module: rates, windows, low-fi conditioning, captions, disjoint splitting (also under real DDP
with gloo), fixed validation examples and bad clips."""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import soxr
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import webdataset as wds
from builders import commit, write_index

from n2m.audio import encode_flac
from n2m.layout import committed_shards
from n2m.training.config import DataConfig
from n2m.training.data import ExampleMaker, ShardDataModule, caption_items, content_only, disjoint_stream
from n2m.training.lowfi import fft_upsample
from n2m.training.stages import STAGES

WINDOW = (0.5, 0.75)


def _module(build: dict, stage: str, batch_size: int = 3, **kw) -> ShardDataModule:
    cfg = DataConfig(build=build["root"], labels="tiny", batch_size=batch_size, num_workers=0, window_s=WINDOW,
                     val_samples=4, **kw)
    dm = ShardDataModule(STAGES[stage], cfg, length_multiple=16)
    dm.setup()
    return dm


def _reference_audio(build: dict) -> dict[str, np.ndarray]:
    """Every clip decoded straight from the tars with soundfile (not through the data module)."""
    out = {}
    for split in ("train", "valid"):
        for shard in sorted(Path(build["root"], "shards", split).glob("*.tar")):
            with tarfile.open(shard) as tar:
                for member in tar.getmembers():
                    if member.name.endswith(".flac"):
                        audio, _ = sf.read(io.BytesIO(tar.extractfile(member).read()), dtype="float32")
                        out[member.name[: -len(".flac")]] = audio
    return out


def _offset_of(window: np.ndarray, signal: np.ndarray) -> int:
    """The offset where ``window`` best fits ``signal`` (least squares over every offset)."""
    w, s = window.astype(np.float64), signal.astype(np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(s**2)])
    energy = cumulative[len(w):] - cumulative[: len(s) - len(w) + 1]
    return int(np.argmin(energy - 2 * scipy.signal.correlate(s, w, mode="valid")))


@pytest.mark.parametrize("stage", ["generator", "cascader", "sr_cascader"])
def test_batches_are_windows_of_the_resampled_clips(tiny_build, stage):
    spec = STAGES[stage]
    dm = _module(tiny_build, stage)
    reference = _reference_audio(tiny_build)
    lengths = set()
    stream = iter(dm.train_stream())
    for _ in range(4):
        batch = next(stream)
        b, c, n = batch["x0"].shape
        assert (b, c) == (3, 1) and batch["x0"].dtype == torch.float32
        assert WINDOW[0] * spec.sample_rate - 16 <= n <= WINDOW[1] * spec.sample_rate and n % 16 == 0
        lengths.add(n)
        assert ("lowfi" in batch) == (spec.cond_rate is not None)
        for i, key in enumerate(batch["key"]):
            resampled = soxr.resample(reference[key], 24_000, spec.sample_rate, quality="HQ").astype(np.float32)
            x = batch["x0"][i, 0].numpy()
            start = _offset_of(x, resampled)
            np.testing.assert_allclose(x, resampled[start:start + n], atol=1e-5)
    assert len(lengths) > 1  # each batch draws its own window length


@pytest.mark.parametrize("stage", ["cascader", "sr_cascader"])
def test_lowfi_is_the_band_limited_target(tiny_build, stage):
    spec = STAGES[stage]
    batch = next(iter(_module(tiny_build, stage).train_stream()))
    x, lowfi = batch["x0"][:, 0].double().numpy(), batch["lowfi"][:, 0].double().numpy()
    hann = np.hanning(x.shape[1])
    fx, fl = np.abs(np.fft.rfft(x * hann)) ** 2, np.abs(np.fft.rfft(lowfi * hann)) ** 2
    freqs = np.fft.rfftfreq(x.shape[1], 1 / spec.sample_rate)
    nyquist = spec.cond_rate / 2
    above, below = freqs > 1.05 * nyquist, freqs < 0.8 * nyquist
    assert fl[:, above].sum() < 1e-4 * fx.sum()  # nothing above the low rate's Nyquist
    assert fx[:, above].sum() > 1e-4 * fx.sum() or stage == "sr_cascader"  # (the cascader's target has some)
    np.testing.assert_allclose(fl[:, below].sum(1), fx[:, below].sum(1), rtol=0.02)  # the band below is kept


def test_fft_upsample_equals_scipy_resample():
    x = np.random.default_rng(0).standard_normal((2, 640)).astype(np.float32)
    for n_out in (3200, 961):
        ref = scipy.signal.resample(x.astype(np.float64), n_out, axis=-1)
        np.testing.assert_allclose(fft_upsample(x, n_out), ref, atol=1e-5)
        np.testing.assert_allclose(fft_upsample(torch.from_numpy(x), n_out).numpy(), ref, atol=1e-5)


def test_captions_are_one_item_per_step_from_labels_and_metadata(tiny_build):
    captions = tiny_build["captions"]
    key = next(iter(captions))
    rng = random.Random(0)
    items = caption_items(key, captions, ["track 0 by the testers"], rng)
    assert items[0] == captions[key]["long"][0] and items[-1] == "track 0 by the testers"
    assert sorted(items[1].split(", ")) == sorted(captions[key]["short"])

    dm = _module(tiny_build, "cascader", batch_size=4)
    seen_kinds = set()
    stream = iter(dm.train_stream())
    for _ in range(15):
        batch = next(stream)
        for key, text in zip(batch["key"], batch["text"]):
            entry = captions[key]
            if text in entry["long"]:
                seen_kinds.add("long")
            elif sorted(text.split(", ")) == sorted(entry["short"]):
                seen_kinds.add("short")
            else:
                assert text.startswith("track ") and text.endswith(" by the testers")
                seen_kinds.add("meta")
    assert seen_kinds == {"long", "short", "meta"}
    assert all(t == "" for t in next(iter(_module(tiny_build, "sr_cascader").train_stream()))["text"])  # no text


@pytest.mark.parametrize("world,workers", [(1, 1), (2, 1), (2, 2), (3, 2)])
def test_every_reader_gets_a_disjoint_share_of_each_epoch(tiny_build, monkeypatch, world, workers):
    urls = [s.tar for s in committed_shards(tiny_build["root"], ["train"])]
    assert len(urls) == 4
    shares = []
    for rank in range(world):
        for worker in range(workers):
            for name, value in (("RANK", rank), ("WORLD_SIZE", world), ("WORKER", worker), ("NUM_WORKERS", workers)):
                monkeypatch.setenv(name, str(value))
            shares.append([s["__key__"] for s in disjoint_stream(urls, seed=5, epochs=2)])
    per_epoch = [set(share[: len(share) // 2]) for share in shares]
    flat = [k for share in per_epoch for k in share]
    assert len(flat) == len(set(flat)) == len(tiny_build["keys"]["train"])  # disjoint and complete in epoch 1
    assert set(flat) == set(tiny_build["keys"]["train"])


def test_data_loader_workers_split_the_stream(tiny_build):
    dm = _module(tiny_build, "generator", batch_size=1)
    stream = dm.train_stream(epochs=1)
    loader = torch.utils.data.DataLoader(_Wrap(stream), batch_size=None, num_workers=2)
    keys = [b["key"][0] for b in loader]
    assert sorted(keys) == sorted(tiny_build["keys"]["train"])


class _Wrap(torch.utils.data.IterableDataset):
    def __init__(self, stream):
        self.stream = stream

    def __iter__(self):
        return iter(self.stream)


def _ddp_worker(rank: int, world: int, root: str, out: str, port: int) -> None:
    os.environ.pop("RANK", None)
    os.environ.pop("WORLD_SIZE", None)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        cfg = DataConfig(build=root, labels="tiny", batch_size=1, num_workers=0, window_s=WINDOW, val_samples=4)
        dm = ShardDataModule(STAGES["generator"], cfg, length_multiple=16)
        dm.setup()
        train = [b["key"][0] for b in dm.train_stream(epochs=1)]
        valid = [k for b in dm.val_examples for k in b["key"]]
        Path(out, f"rank{rank}.json").write_text(json.dumps({"train": train, "valid": valid}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_see_disjoint_samples(tiny_build, tmp_path):
    port = 29_500 + os.getpid() % 1000
    mp.start_processes(_ddp_worker, args=(2, tiny_build["root"], str(tmp_path), port), nprocs=2, join=True,
                       start_method="fork")
    ranks = [json.loads(Path(tmp_path, f"rank{r}.json").read_text()) for r in range(2)]
    train = [set(r["train"]) for r in ranks]
    assert not train[0] & train[1] and train[0] | train[1] == set(tiny_build["keys"]["train"])
    assert len(ranks[0]["valid"]) == len(ranks[1]["valid"]) == 2  # fixed validation set split evenly
    assert not set(ranks[0]["valid"]) & set(ranks[1]["valid"])


def test_validation_examples_are_fixed(tiny_build):
    a, b = _module(tiny_build, "cascader"), _module(tiny_build, "cascader")
    assert len(a.val_examples) == 4
    for ea, eb in zip(a.val_examples, b.val_examples):
        assert ea["key"] == eb["key"] and ea["text"] == eb["text"]
        assert torch.equal(ea["x0"], eb["x0"]) and torch.equal(ea["lowfi"], eb["lowfi"])
        assert ea["x0"].shape[-1] == 8000  # the shortest window (0.5 s at 16 kHz), a multiple of the stride


def test_bad_clips_are_skipped_and_the_stream_goes_on(tmp_path, caplog):
    shard_dir = tmp_path / "shards" / "train"
    shard_dir.mkdir(parents=True)
    tone = (0.1 * np.sin(np.arange(24_000) / 10)).astype(np.float32)[None]
    with wds.TarWriter(str(shard_dir / "train-000000.tar")) as sink:
        for i, audio in enumerate([encode_flac(tone, 24_000), b"not audio at all", encode_flac(tone, 24_000)]):
            sink.write({"__key__": f"{i:016x}_0000", "flac": audio, "json": json.dumps({"text": []}).encode()})
    keys = [f"{i:016x}_0000" for i in range(3)]
    commit(shard_dir / "train-000000.tar", keys)
    write_index(tmp_path, [(k, "train", "train-000000.tar", 1.0) for k in keys])
    (shard_dir / "train-000001.tar").write_bytes(b"uncommitted: no marker")
    assert [s.tar for s in committed_shards(str(tmp_path), ["train"])] == [str(shard_dir / "train-000000.tar")]
    cfg = DataConfig(build=str(tmp_path), batch_size=1, num_workers=0, window_s=(0.5, 0.5), val_samples=0)
    dm = ShardDataModule(STAGES["sr_cascader"], cfg, length_multiple=16)
    dm.setup()
    keys = [b["key"][0] for b in dm.train_stream(epochs=1)]
    assert sorted(keys) == [f"{0:016x}_0000", f"{2:016x}_0000"]
    assert any("skipping clip" in r.message for r in caplog.records)


@pytest.mark.parametrize("padded, audible", [(True, True), (False, False)])
def test_a_window_never_falls_on_the_padding_of_a_padded_clip(padded, audible):
    # a 10 s clip at 24 kHz: a 0.3-amplitude sine for its first 6 s, then the build's zero padding. The last window
    # (offset 1.0 of the free range) of 0.5 s lies inside the audio when the clip says it is padded (RMS of the sine:
    # 0.3 / sqrt 2), and on the padding when it does not (the clip's zeros are then taken as audio)
    sr, audio_s = 24_000, 6.0
    wave = np.zeros((1, 10 * sr), np.float32)
    wave[0, :int(audio_s * sr)] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(audio_s * sr)) / sr)
    meta = {"key": "k_0000", "padded": padded, "duration_s": audio_s if padded else 10.0, "meta": {}}
    sample = {"__key__": "k_0000", "flac": encode_flac(wave, sr), "json": json.dumps(meta).encode()}
    maker = ExampleMaker(STAGES["sr_cascader"], sr // 2, {}, False)
    x0 = maker(sample, random.Random(0), 1.0)["x0"]
    rms = float(np.sqrt(np.mean(np.square(x0))))
    assert x0.shape[-1] == sr // 2
    assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.02) if audible else rms < 1e-4


def test_a_clip_shorter_than_the_window_keeps_its_padding():
    mono = np.ones((1, 1000), np.float32)
    short = content_only(mono, 100, {"padded": True, "duration_s": 2.0}, window_s=5.0)
    assert short.shape == (1, 1000)  # 2 s of audio under a 5 s window: the window needs the padding
    trimmed = content_only(mono, 100, {"padded": True, "duration_s": 6.0}, window_s=5.0)
    assert trimmed.shape == (1, 600)
