"""Fréchet distance against closed forms, its invariances, the two square-root paths, FAD-inf, per-song and bootstrap."""

import warnings

import numpy as np
import pytest

from n2m.eval import frechet
from n2m.eval.frechet import Stats, StatsAccumulator, frechet_distance, stats_of


def _random_orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def test_one_dimensional_closed_form():
    # FD of N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2.
    a = Stats(10, np.array([1.5]), np.array([[4.0]]))
    b = Stats(10, np.array([-0.5]), np.array([[0.25]]))
    result = frechet_distance(a, b)
    assert result.valid
    assert result.value == pytest.approx((1.5 + 0.5) ** 2 + (2.0 - 0.5) ** 2, rel=1e-12)
    assert result.value_sqrtm == pytest.approx(result.value, rel=1e-10)


def test_commuting_covariances_closed_form():
    # Covariances sharing eigenvectors: tr sqrt(S1 S2) = sum sqrt(a_i b_i).
    rng = np.random.default_rng(0)
    d = 12
    q = _random_orthogonal(rng, d)
    ea, eb = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    ma, mb = rng.normal(size=d), rng.normal(size=d)
    a = Stats(100, ma, q @ np.diag(ea) @ q.T)
    b = Stats(100, mb, q @ np.diag(eb) @ q.T)
    expected = ((ma - mb) ** 2).sum() + ea.sum() + eb.sum() - 2 * np.sqrt(ea * eb).sum()
    assert frechet_distance(a, b).value == pytest.approx(expected, rel=1e-9)


def test_diagonal_closed_form():
    da, db = np.array([1.0, 2.0, 9.0]), np.array([4.0, 2.0, 1.0])
    a = Stats(5, np.zeros(3), np.diag(da))
    b = Stats(5, np.ones(3), np.diag(db))
    expected = 3.0 + ((np.sqrt(da) - np.sqrt(db)) ** 2).sum()
    assert frechet_distance(a, b).value == pytest.approx(expected, rel=1e-12)


def test_general_two_by_two_closed_form():
    # For 2x2 M with non-negative real eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)).
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[0.5, -0.2], [-0.2, 3.0]])
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    expected = np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    result = frechet_distance(Stats(3, np.zeros(2), s1), Stats(3, np.zeros(2), s2))
    assert result.value == pytest.approx(expected, rel=1e-10)


def test_identity_symmetry_and_order_invariance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16)) + 3.0
    y = rng.normal(size=(400, 16)) * 2.0
    sx = stats_of(x)
    assert abs(frechet_distance(sx, sx).value) <= 1e-9
    assert frechet_distance(sx, stats_of(y)).value == pytest.approx(frechet_distance(stats_of(y), sx).value, rel=1e-10)
    # Order of rows and of batches does not change the statistics.
    shuffled = StatsAccumulator(16)
    perm = rng.permutation(500)
    for chunk in np.array_split(x[perm], 7):
        shuffled.update(chunk)
    st = shuffled.stats()
    np.testing.assert_allclose(st.mean, sx.mean, rtol=1e-12)
    np.testing.assert_allclose(st.cov, sx.cov, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(st.cov, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("na,nb", [(10, 30), (25, 200), (7, 9)])
def test_low_rank_factor_route_equals_the_full_eigendecomposition(na, nb):
    rng = np.random.default_rng(na)
    d = 40
    a, b = stats_of(rng.normal(size=(na, d))), stats_of(rng.normal(size=(nb, d)) * 2 + 1)
    full = frechet.trace_sqrt_eig(a.cov, b.cov)
    assert a.factor is not None and (b.factor is not None) == (nb <= d)
    # The D x D route takes square roots of ~1e-16 rounding eigenvalues of the singular covariance (errors ~1e-8).
    assert frechet.trace_sqrt(a, b) == pytest.approx(full, rel=1e-6)
    assert frechet.trace_sqrt(b, a) == pytest.approx(frechet.trace_sqrt(a, b), rel=1e-12)
    np.testing.assert_allclose(a.factor.T @ a.factor, a.cov, atol=1e-12)


def test_sum_form_matches_streaming_form():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 8)) + 50.0
    a = stats_of(x)
    b = frechet.stats_from_sums(len(x), x.sum(0), x.T @ x)
    np.testing.assert_allclose(a.cov, b.cov, rtol=1e-7)


@pytest.mark.parametrize("rank", [20, 60])
def test_square_root_paths_agree_on_ill_conditioned_covariances(rank):
    # Rank-deficient / badly scaled covariances (fewer samples than dimensions; scales spanning 1e-6..1e3).
    rng = np.random.default_rng(3)
    d = 64
    scales = np.logspace(-3, 1.5, d)
    x = rng.normal(size=(rank, d)) * scales
    y = rng.normal(size=(rank + 7, d)) * scales[::-1] + 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error", frechet.FrechetWarning)
        result = frechet_distance(stats_of(x), stats_of(y))
    assert result.valid and result.value > 0
    assert result.value_sqrtm == pytest.approx(result.value, rel=1e-4)


def test_negative_is_never_reported_as_valid():
    a = Stats(3, np.zeros(2), np.eye(2))
    # A "covariance" with a negative eigenvalue is inconsistent: FD would be -3 and scipy's root is complex.
    bad = Stats(3, np.zeros(2), np.array([[1.0, 0.0], [0.0, -4.0]]))
    with pytest.warns(frechet.FrechetWarning, match="negative"):
        result = frechet_distance(a, bad)
    assert not result.valid and result.value is None
    assert result.value_sqrtm is None and any("imaginary" in n for n in result.notes)


def test_disagreement_between_paths_warns(monkeypatch):
    a, b = Stats(3, np.zeros(2), np.eye(2)), Stats(3, np.ones(2), 2 * np.eye(2))
    monkeypatch.setattr(frechet, "trace_sqrt_scipy", lambda c1, c2: (1.01 * frechet.trace_sqrt_eig(c1, c2), None))
    with pytest.warns(frechet.FrechetWarning, match="disagree"):
        result = frechet_distance(a, b)
    assert result.valid and result.value == pytest.approx(2 + 2 + 4 - 2 * 2 * np.sqrt(2))


def test_fad_inf_recovers_true_distance():
    rng = np.random.default_rng(4)
    d = 8
    mean_ref, cov_ref = np.zeros(d), np.eye(d)
    scales = np.linspace(0.5, 1.5, d)
    shift = np.full(d, 0.3)
    true_fd = (shift**2).sum() + d + (scales**2).sum() - 2 * scales.sum()
    reference = Stats(10**9, mean_ref, cov_ref)  # the population itself
    samples = rng.normal(size=(6000, d)) * scales + shift
    fit = frechet.fad_inf(reference, samples, sizes=[300, 500, 800, 1200, 2000, 3000, 4500, 6000], seed=0, reps=3)
    plain = frechet_distance(reference, stats_of(samples[:300])).value
    assert fit.slope > 0  # the finite-n bias is positive
    assert abs(fit.value - true_fd) < 0.25 * abs(plain - true_fd)
    assert fit.value == pytest.approx(true_fd, abs=0.02)


def test_fad_inf_is_seeded():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 4))
    ref = stats_of(rng.normal(size=(400, 4)))
    assert frechet.fad_inf(ref, x, seed=7).as_dict() == frechet.fad_inf(ref, x, seed=7).as_dict()


def test_per_song_and_single_frame_point_mass():
    ref = Stats(100, np.zeros(2), np.diag([1.0, 4.0]))
    one = np.array([[3.0, 4.0]])
    # A single frame is a point mass: FD = |mu - x|^2 + tr(S_ref).
    assert frechet.per_song(ref, [one])[0].value == pytest.approx(25.0 + 5.0)


def test_bootstrap_interval_covers_the_point_estimate():
    rng = np.random.default_rng(6)
    ref_files = [rng.normal(size=(5, 6)) for _ in range(60)]
    gen_files = [rng.normal(size=(5, 6)) + 0.5 for _ in range(60)]
    point = frechet_distance(stats_of(np.concatenate(ref_files)), stats_of(np.concatenate(gen_files))).value
    ci = frechet.bootstrap(ref_files, gen_files, reps=100, seed=0)
    assert ci.low < point < ci.high
    assert ci.as_dict() == frechet.bootstrap(ref_files, gen_files, reps=100, seed=0).as_dict()
