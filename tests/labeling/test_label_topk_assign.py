"""Top-K scoring against a brute-force sort, bounded memory at 1M entries, and the inverse-frequency sampler."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy import stats

from n2m.labeling.assign import assign, count_topk, rng_for, sample_inverse_frequency
from n2m.labeling.topk import memmap_blocks, stream_topk, text_embedding_cache


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("block,query_block", [(7, 5), (64, 1024), (1000, 3)])
def test_stream_topk_matches_brute_force_sort(block, query_block):
    rng = np.random.default_rng(0)
    q, e = _unit(rng, 37, 8), _unit(rng, 500, 8)
    ids, scores = stream_topk(q, memmap_blocks(e, block), k=10, query_block=query_block)
    full = q.astype(np.float64) @ e.T.astype(np.float64)
    expected = np.argsort(-full, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), atol=1e-5)


def test_k_larger_than_vocabulary_and_ties_go_to_lower_index():
    q = np.array([[1.0, 0.0]], np.float32)
    e = np.array([[0.5, 0.0], [1.0, 0.0], [0.5, 0.0]], np.float32)  # entries 0 and 2 tie
    ids, scores = stream_topk(q, memmap_blocks(e, 1), k=5)
    np.testing.assert_array_equal(ids, [[1, 0, 2]])
    np.testing.assert_allclose(scores, [[1.0, 0.5, 0.5]])


def test_text_embedding_cache_blocks_and_reuse(tmp_path):
    texts = [f"entry {i}" for i in range(10)]
    calls = []

    def embed(batch):
        calls.append(len(batch))
        return np.array([[len(t), int(t.split()[1])] for t in batch], np.float32)

    out = text_embedding_cache(tmp_path / "v.npy", lambda a, b: texts[a:b], 10, embed, dim=2, block=4)
    assert calls == [4, 4, 2]
    np.testing.assert_array_equal(out[:, 1], np.arange(10))
    text_embedding_cache(tmp_path / "v.npy", lambda a, b: texts[a:b], 10, embed, dim=2, block=4)
    assert calls == [4, 4, 2]  # reused, nothing recomputed
    assert [p.name for p in tmp_path.iterdir()] == ["v.npy"]  # no leftover of the streamed write
    reference = tmp_path / "reference.npy"
    np.save(reference, embed(texts))  # numpy's own writer, the whole array at once
    assert (tmp_path / "v.npy").read_bytes() == reference.read_bytes()


def test_one_million_entries_in_bounded_memory():
    """Score 200 clips against 1M random entries in a fresh process; the peak RSS growth must stay far below the
    800 MB a dense [200, 1M] score matrix would need and the 64 MB of the entries themselves (one [200, 32768]
    score block is 26 MB)."""
    code = textwrap.dedent(
        """
        import json, resource, numpy as np, torch
        torch.set_num_threads(1)
        from n2m.labeling.topk import stream_topk
        rng = np.random.default_rng(0)
        q = rng.standard_normal((200, 16)).astype(np.float32)
        stream_topk(q, (rng.standard_normal((64, 16)).astype(np.float32) for _ in range(2)), k=10)  # warm up
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        def blocks():
            for b in range(1_000_000 // 32_768 + 1):
                n = min(32_768, 1_000_000 - b * 32_768)
                yield np.random.default_rng(b).standard_normal((n, 16)).astype(np.float32)
        ids, scores = stream_topk(q, blocks(), k=10)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"growth_kb": peak - base, "max_id": int(ids.max()), "shape": list(ids.shape)}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["shape"] == [200, 10]
    assert report["max_id"] > 900_000  # the tail of the vocabulary was reached
    assert report["growth_kb"] < 60_000, report


def test_count_topk_counts_lists_not_slots():
    a = np.array([[0, 1, 2], [2, 3, -1]])
    b = np.array([[2, 0, 4]])
    np.testing.assert_array_equal(count_topk([a, b], 6), [2, 1, 3, 1, 1, 0])


def test_single_draw_distribution_is_inverse_frequency():
    """Chi-square of first draws against the closed form P_i = (1/c_i) / sum_j (1/c_j)."""
    ids = np.array([0, 1, 2, 3, 4])
    counts = np.array([1, 2, 4, 8, 1])
    expected = (1 / counts) / (1 / counts).sum()
    rng = np.random.default_rng(123)
    draws = 20_000
    first = np.array([sample_inverse_frequency(ids, counts, 1, rng)[0] for _ in range(draws)])
    observed = np.bincount(first, minlength=5)
    _, p = stats.chisquare(observed, expected * draws)
    assert p > 1e-3, (observed, expected * draws)
    # and it is not uniform: the same test rejects the uniform hypothesis
    _, p_uniform = stats.chisquare(observed, np.full(5, draws / 5))
    assert p_uniform < 1e-6


def test_two_draws_follow_successive_sampling():
    """P(second = j | first = i) = w_j / (W - w_i): check the joint of the first two draws."""
    ids = np.array([0, 1, 2])
    counts = np.array([1, 2, 3])
    w = 1 / counts
    joint = np.array([[w[i] / w.sum() * (w[j] / (w.sum() - w[i])) if i != j else 0 for j in range(3)] for i in range(3)])
    rng = np.random.default_rng(7)
    draws = 12_000
    observed = np.zeros((3, 3))
    for _ in range(draws):
        a, b = sample_inverse_frequency(ids, counts, 2, rng)
        observed[a, b] += 1
    mask = joint > 0
    _, p = stats.chisquare(observed[mask], joint[mask] * draws)
    assert p > 1e-3


def test_without_replacement_and_deterministic_by_seed():
    rng = np.random.default_rng(0)
    topk = np.stack([rng.permutation(50)[:10] for _ in range(40)])
    counts = count_topk([topk], 50)
    keys = [f"{i:016x}_0000" for i in range(40)]
    a = assign(keys, topk, counts, 6, seed=0, vocab="aspects")
    b = assign(keys[::-1], topk[::-1], counts, 6, seed=0, vocab="aspects")[::-1]  # order does not matter
    c = assign(keys, topk, counts, 6, seed=1, vocab="aspects")
    for row, x, y in zip(topk, a, b):
        assert len(set(x.tolist())) == 6 and set(x.tolist()) <= set(row.tolist())
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c))
    assert rng_for(0, "v", "k").random() != rng_for(0, "w", "k").random()
