"""The bank of a joint-embedding stage and the text bridge (:mod:`n2m.training.joint_bank`): the sketch keeps the clips
whose key hashes lowest whatever the order, the bridge is the mean of the nearest vectors by cosine (checked against a
brute-force numpy search), and the bank survives a checkpoint, an export and a damaged file the way a user meets them."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from n2m.errors import UserError
from n2m.training.joint_bank import BankCollector, JointBank, TextBridge


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_sketch_keeps_the_lowest_hashed_keys_whatever_the_order_and_each_key_once():
    rng = np.random.default_rng(0)
    keys = [f"track{i:03d}_{j:04d}" for i in range(40) for j in range(3)]
    vectors = {k: v for k, v in zip(keys, _unit(rng, len(keys), 8))}
    lowest = sorted(keys, key=lambda k: hashlib.sha1(k.encode()).digest()[:8])[:25]  # the sketch's rule, restated
    banks = []
    for order in (keys, keys[::-1], list(rng.permutation(keys))):
        collector = BankCollector(capacity=25)
        for start in range(0, len(order), 7):  # batches of 7, every key offered twice
            batch = order[start:start + 7]
            collector.add(batch, torch.from_numpy(np.stack([vectors[k] for k in batch])))
            collector.add(batch, torch.zeros(len(batch), 8))  # a second offer of a kept key changes nothing
        banks.append(collector.bank())
    for bank in banks:
        assert bank.keys == sorted(lowest)
        np.testing.assert_array_equal(bank.vectors.numpy(), np.stack([vectors[k] for k in sorted(lowest)]))
    resumed = BankCollector(capacity=25)
    resumed.restore(JointBank.from_state(banks[0].state()))
    assert resumed.bank().keys == banks[0].keys and len(resumed) == 25
    assert BankCollector().bank() is None


def test_nearest_is_the_unit_mean_of_the_k_most_cosine_similar_vectors():
    rng = np.random.default_rng(1)
    bank = JointBank([f"c{i}" for i in range(30)], torch.from_numpy(_unit(rng, 30, 6) * 3.0))  # norms do not matter
    queries = rng.normal(size=(4, 6)).astype(np.float32)
    for k in (1, 3, 30, 50):
        mixed, matches = bank.nearest(queries, k)
        unit = _unit(np.random.default_rng(1), 30, 6)
        for q, got, found in zip(queries, mixed, matches):
            cos = unit @ (q / np.linalg.norm(q))
            order = np.argsort(-cos)[:min(k, 30)]
            mean = unit[order].mean(axis=0)
            np.testing.assert_allclose(got, mean / np.linalg.norm(mean), atol=1e-5)
            assert [m["key"] for m in found] == [f"c{i}" for i in order]
            np.testing.assert_allclose([m["cos"] for m in found], cos[order], atol=1e-4)
    with pytest.raises(UserError, match="do not fit the bank's width 6"):
        bank.nearest(np.zeros((1, 5), np.float32), 1)


def test_the_bridge_defaults_to_the_bank_and_refuses_nearest_without_one():
    rng = np.random.default_rng(2)
    bank = JointBank(["a", "b", "c"], torch.from_numpy(_unit(rng, 3, 4)))
    text = _unit(rng, 2, 4)
    vectors, record = TextBridge().apply(text, bank, "spec_generator")
    assert record["mode"] == "nearest" and record["neighbours"] == 5 and len(record["matches"]) == 2
    everyone = bank.vectors.numpy().mean(axis=0)  # k = 5 > 3 clips: both prompts get the mean of all three
    np.testing.assert_allclose(vectors, np.tile(everyone / np.linalg.norm(everyone), (2, 1)), atol=1e-6)
    same, record = TextBridge().apply(text, None, "spec_generator")
    assert record == {"mode": "direct"} and same is text
    assert TextBridge("direct").apply(text, bank, "g")[1] == {"mode": "direct"}
    with pytest.raises(UserError, match="the generator stage holds no bank"):
        TextBridge("nearest").apply(text, None, "generator")
    with pytest.raises(UserError, match="--text-bridge must be one of nearest, direct"):
        TextBridge("retrieval")
    with pytest.raises(UserError, match="--bridge-neighbours must be at least 1"):
        TextBridge(neighbours=0)


def test_the_bank_file_of_an_export_round_trips_and_a_damaged_one_is_one_line(tmp_path):
    rng = np.random.default_rng(3)
    bank = JointBank(["x_0000", "y_0001"], torch.from_numpy(_unit(rng, 2, 5)))
    assert JointBank.load(tmp_path) is None
    bank.save(tmp_path)
    back = JointBank.load(tmp_path)
    assert back.keys == bank.keys and torch.equal(back.vectors, bank.vectors)
    (tmp_path / "joint_bank.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="cannot read .*joint_bank.safetensors"):
        JointBank.load(tmp_path)
    with pytest.raises(UserError, match="needs N keys and"):
        JointBank(["only one"], torch.zeros(2, 5))
