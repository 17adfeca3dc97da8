import numpy as np
import pytest
from scipy.stats import spearmanr

from mrl.common.errors import ConfigError
from mrl.evaluation.intervals import (
    Interval,
    _spearman_rows,
    intervals_by_dim,
    spearman_difference_interval,
)

# Generative model with a closed-form answer: gold g ~ N(0, 1); every run of a group scores
# pair i as g + h + sigma_s * e, with h ~ N(0, VAR_H) a pair difficulty shared by all runs
# (what makes the pairing matter), e ~ N(0, 1) per run and pair, and a seed-level noise
# scale sigma_s = sigma * exp(TAU * z_s), z_s ~ N(0, 1) (seed-to-seed variation). For a
# bivariate normal with correlation r the population Spearman is (6 / pi) asin(r / 2), and
# here r = 1 / sqrt(1 + VAR_H + sigma_s^2).
VAR_H, TAU = 0.25, 0.15
_Z = np.random.default_rng(12345).standard_normal(1_000_000)


def _population_spearman(sigma):
    return 6 / np.pi * np.arcsin(1 / np.sqrt(1 + VAR_H + sigma**2) / 2)


def _true_difference(sigma_a, sigma_b):
    """E over seeds of the population Spearman, a minus b (Monte Carlo over z only)."""
    scale = np.exp(TAU * _Z)
    return float(
        _population_spearman(sigma_a * scale).mean() - _population_spearman(sigma_b * scale).mean()
    )


def _simulate(rng, n_pairs, n_seeds_a, n_seeds_b, sigma_a, sigma_b, tau=TAU):
    gold = rng.standard_normal(n_pairs)
    signal = gold + np.sqrt(VAR_H) * rng.standard_normal(n_pairs)

    def group(n_seeds, sigma):
        sigma_s = sigma * np.exp(tau * rng.standard_normal(n_seeds))[:, None]
        return signal + sigma_s * rng.standard_normal((n_seeds, n_pairs))

    return group(n_seeds_a, sigma_a), group(n_seeds_b, sigma_b), gold


def test_estimate_is_the_mean_spearman_difference():
    a, b, gold = _simulate(np.random.default_rng(0), 150, 3, 2, 0.8, 1.0)
    got = spearman_difference_interval(a, b, gold, n_boot=200)
    direct = np.mean([spearmanr(row, gold).statistic for row in a]) - np.mean(
        [spearmanr(row, gold).statistic for row in b]
    )
    assert isinstance(got, Interval)
    assert got.estimate == pytest.approx(direct, abs=1e-12)
    assert got.low < got.estimate < got.high
    assert (got.n_seeds_a, got.n_seeds_b, got.level) == (3, 2, 0.95)
    assert "seeds" in got.method
    # the same seed gives the same interval
    assert spearman_difference_interval(a, b, gold, n_boot=200) == got


def test_replicate_spearman_ranks_ties_like_scipy():
    # a bootstrap replicate repeats pairs, so both sims and gold have ties
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 5, 40).astype(float)
    sims = rng.standard_normal((3, 40))
    idx = rng.integers(0, 40, size=(4, 40))
    got = _spearman_rows(sims[:, idx].transpose(1, 0, 2), gold[idx][:, None, :])
    for r in range(4):
        for s in range(3):
            assert got[r, s] == pytest.approx(spearmanr(sims[s, idx[r]], gold[idx[r]]).statistic)


def test_interval_shrinks_with_more_test_pairs():
    rng = np.random.default_rng(2)
    widths = {}
    for n_pairs in (200, 2000):
        a, b, gold = _simulate(rng, n_pairs, 1, 1, 0.8, 1.0, tau=0.0)
        got = spearman_difference_interval(a, b, gold, n_boot=400)
        widths[n_pairs] = got.high - got.low
    # the standard error goes as 1 / sqrt(pairs): about sqrt(10) narrower
    assert widths[2000] < 0.5 * widths[200]


def test_chunked_replicates_give_the_same_interval(monkeypatch):
    import mrl.evaluation.intervals as intervals

    a, b, gold = _simulate(np.random.default_rng(3), 100, 2, 2, 0.8, 1.0)
    whole = spearman_difference_interval(a, b, gold, n_boot=300)
    monkeypatch.setattr(intervals, "_CHUNK_CELLS", 1)  # one replicate at a time
    chunked = spearman_difference_interval(a, b, gold, n_boot=300)
    assert chunked.estimate == whole.estimate
    # different draw order, same distribution: ends agree to bootstrap noise
    assert chunked.low == pytest.approx(whole.low, abs=0.03)
    assert chunked.high == pytest.approx(whole.high, abs=0.03)


def test_one_seed_per_group_says_test_set_variation_only():
    a, b, gold = _simulate(np.random.default_rng(4), 300, 1, 1, 0.8, 1.0)
    got = spearman_difference_interval(a[0], b, gold, n_boot=300)  # 1-D is one seed
    assert (got.n_seeds_a, got.n_seeds_b) == (1, 1)
    assert "test-set variation only" in got.method
    assert got.low < got.estimate < got.high


def test_significant_iff_the_interval_excludes_zero():
    def interval(low, high):
        return Interval(0.0, low, high, 0.95, 1, 1, "")

    assert interval(0.01, 0.05).significant
    assert interval(-0.05, -0.01).significant
    assert not interval(-0.01, 0.05).significant
    assert not interval(0.0, 0.05).significant


def test_intervals_by_dim_matches_the_single_call_at_each_dim():
    rng = np.random.default_rng(5)
    a, b, gold = _simulate(rng, 120, 2, 3, 0.8, 1.0)
    a_small, b_small, _ = _simulate(rng, 120, 2, 3, 1.2, 1.2)
    got = intervals_by_dim({64: a, 32: a_small}, {32: b_small, 64: b}, gold, n_boot=100)
    assert list(got) == [32, 64]
    assert got[64] == spearman_difference_interval(a, b, gold, n_boot=100)
    with pytest.raises(ConfigError, match="same dims"):
        intervals_by_dim({64: a}, {32: b}, gold)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gold": np.arange(9.0)}, "mismatched pair counts"),
        ({"sims_b": np.ones((2, 9))}, "mismatched pair counts"),
        ({"sims_a": np.ones((2, 2)), "sims_b": np.ones((2, 2)), "gold": [1.0, 2.0]}, "at least 3"),
        ({"level": 1.0}, r"level must be in \(0, 1\)"),
        ({"level": 0.0}, r"level must be in \(0, 1\)"),
        ({"level": 95}, r"level must be in \(0, 1\)"),
    ],
)
def test_bad_input_is_one_config_error_line(change, message):
    rng = np.random.default_rng(6)
    kwargs = {
        "sims_a": rng.standard_normal((2, 10)),
        "sims_b": rng.standard_normal((2, 10)),
        "gold": rng.standard_normal(10),
        "n_boot": 10,
    } | change
    with pytest.raises(ConfigError, match=message) as error:
        spearman_difference_interval(**kwargs)
    assert "\n" not in str(error.value)


# 100 simulations of 300 pairs, 3 seeds per group, n_boot 500: about 7 s each test on one core.
N_SIMULATIONS, N_PAIRS, N_SEEDS, N_BOOT = 100, 300, 3, 500


@pytest.mark.slow
def test_95_percent_interval_covers_the_true_difference():
    truth = _true_difference(0.8, 1.0)
    assert 0.05 < truth < 0.08  # a real, moderate difference
    rng = np.random.default_rng(7)
    covered = 0
    for k in range(N_SIMULATIONS):
        a, b, gold = _simulate(rng, N_PAIRS, N_SEEDS, N_SEEDS, 0.8, 1.0)
        got = spearman_difference_interval(a, b, gold, n_boot=N_BOOT, seed=k)
        covered += got.low <= truth <= got.high
    assert 0.88 <= covered / N_SIMULATIONS <= 1.0


@pytest.mark.slow
def test_no_difference_is_called_significant_about_5_percent_of_the_time():
    rng = np.random.default_rng(8)
    called = 0
    for k in range(N_SIMULATIONS):
        a, b, gold = _simulate(rng, N_PAIRS, N_SEEDS, N_SEEDS, 0.9, 0.9)
        called += spearman_difference_interval(a, b, gold, n_boot=N_BOOT, seed=k).significant
    assert called / N_SIMULATIONS <= 0.12
