"""The musicnn adherence judge: probe and tag agreement against hand-computed numbers, the bootstrap interval against
its closed form, manifest errors, and ``n2m eval adherence | fad | musiccaps --embedding musicnn`` end to end with the
real weights (installed by ``n2m models fetch``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.adherence import fit_centroids, nearest_centroid, probe_score, read_probe_labels, tag_agreement
from eval.clap_score import bootstrap_mean
from n2m.errors import JobFailed, UserError


def test_probe_against_hand_computed_centroids():
    train = np.array([[0, 0], [2, 0], [0, 4], [0, 6], [5, 5], [7, 7], [6, 3]], np.float32)
    labels = ["A", "A", "B", "B", "C", "C", "C"]
    classes, centroids = fit_centroids(train, labels)
    assert classes == ["A", "B", "C"]
    np.testing.assert_allclose(centroids, [[1, 0], [0, 5], [6, 5]])
    # Squared distances to (A, B, C), by hand: (1,1): 1, 17, 41 -> A; (0.4,3.1): 9.97, 3.77, 34.97 -> B;
    # (4,3): 18, 20, 8 -> C; (2.5,4.5): 22.5, 6.5, 12.5 -> B.
    queries = np.array([[1, 1], [0.4, 3.1], [4, 3], [2.5, 4.5]], np.float32)
    predicted = nearest_centroid(classes, centroids, queries)
    assert predicted == ["A", "B", "C", "B"]
    score = probe_score(["q1", "q2", "q3", "q4"], predicted, ["A", "B", "C", "A"], reps=500, seed=0)
    assert score["accuracy"] == 0.75 and score["n"] == 4
    # chance = sum_c P(pred=c) P(true=c) = (1*2 + 2*1 + 1*1) / 4^2
    assert score["chance"] == pytest.approx(5 / 16)
    assert score["confusion"] == {"A": {"A": 1, "B": 1}, "B": {"B": 1}, "C": {"C": 1}}
    assert score["per_item"]["q4"] == {"label": "A", "predicted": "B"}
    assert 0.0 <= score["low"] <= 0.75 <= score["high"] <= 1.0
    assert {score["low"] * 4, score["high"] * 4} <= {0.0, 1.0, 2.0, 3.0, 4.0}  # means of four 0/1 values


def test_tag_agreement_paired_vs_shuffled_on_a_constructed_case():
    reference = {"a": np.array([1.0, 0, 0]), "b": np.array([0, 1.0, 0]), "c": np.array([0, 0, 1.0]),
                 "only-ref": np.array([1.0, 1, 1])}
    generated = {"a": np.array([3.0, 4, 0]), "b": np.array([0, 0.5, 0]), "c": np.array([0, 0, 2.0]),
                 "only-gen": np.array([1.0, 0, 0])}
    agreement = tag_agreement(generated, reference)
    # cos(g_a, r_a..r_c) = 0.6, 0.8, 0; g_b and g_c point along their own reference.
    assert agreement.ids == ("a", "b", "c")
    np.testing.assert_allclose(agreement.paired, [0.6, 1.0, 1.0])
    np.testing.assert_allclose(agreement.shuffled, [0.4, 0.0, 0.0])  # mean over the other two references
    section = agreement.as_dict(reps=200, seed=1)
    assert section["gain"]["mean"] == pytest.approx((0.2 + 1.0 + 1.0) / 3)
    assert section["paired"]["low"] >= 0.6 - 1e-12 and section["paired"]["high"] <= 1.0 + 1e-12
    assert section["missing_reference"] == ["only-gen"] and section["missing_generated"] == ["only-ref"]
    with pytest.raises(JobFailed):
        tag_agreement({"a": generated["a"]}, reference)


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
    values = np.random.default_rng(3).normal(2.0, 1.5, size=400)
    low, high = bootstrap_mean(values, reps=4000, seed=0)
    half = 1.959964 * values.std(ddof=1) / np.sqrt(values.size)  # closed form for a large sample
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert (low + high) / 2 == pytest.approx(values.mean(), abs=0.1 * half)
    assert bootstrap_mean(np.full(5, 0.3), reps=50) == pytest.approx((0.3, 0.3))
    with pytest.raises(ValueError):
        bootstrap_mean(np.array([1.0]))


def test_probe_manifest_errors_are_one_line_user_errors(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    manifest = tmp_path / "m.jsonl"
    for rows, message in (
        ([{"path": "a.wav", "style": ["rock", "pop"]}], "single value"),
        ([{"path": "a.wav"}], "single value"),
        ([{"path": "a.wav", "style": "rock", "holdout": True}], "every row is held out"),
        ([{"path": "missing.wav", "style": "rock"}], "missing"),
        ([{"path": "a.wav", "style": "rock"}, {"path": "x/a.wav", "style": "pop"}], "share the file stem"),
    ):
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(UserError, match=message):
            read_probe_labels(manifest, "style")
    manifest.write_text('{"path": "a.wav", "style": "rock"}\n')
    labels = read_probe_labels(manifest, "style")
    assert labels.labels == {"a": "rock"} and labels.centroid_files == (tmp_path / "a.wav",) and not labels.held_out_files
