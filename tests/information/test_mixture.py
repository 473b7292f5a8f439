import numpy as np
import pytest
from scipy import integrate
from scipy import stats

from tfinfo.information.mixture import mixture_label_information
from tfinfo.information.mixture import mixture_mutual_information


def test_exact_limits_and_the_bounds_bracket_a_quadrature_truth():
    n = 7
    for bound in ("upper", "lower"):
        assert mixture_mutual_information(np.zeros((n, 3)), 0.5, bound) == pytest.approx(0.0, abs=1e-12)
        assert mixture_mutual_information(1e3 * np.eye(n), 0.5, bound) == pytest.approx(np.log(n), abs=1e-9)
    # 1-D mixture of 5 unit Gaussians: I = H(Z) - 1/2 log(2 pi e), H(Z) by quadrature.
    centres = np.array([-2.0, -0.5, 0.0, 1.0, 3.0])

    def density(z):
        return np.mean(stats.norm.pdf(z - centres))

    h, _ = integrate.quad(lambda z: -density(z) * np.log(density(z)), -15, 18, limit=200)
    truth = h - 0.5 * np.log(2 * np.pi * np.e)
    lower = mixture_mutual_information(centres[:, None], 1.0, "lower")
    upper = mixture_mutual_information(centres[:, None], 1.0, "upper")
    assert lower <= truth <= upper


def test_label_information_is_log_2_for_separated_classes_and_0_when_ignored():
    t = np.concatenate([np.zeros((50, 2)), 100.0 * np.ones((50, 2))])
    y = np.repeat([0, 1], 50)
    assert mixture_label_information(y, t, 1.0) == pytest.approx(np.log(2), abs=1e-9)
    shuffled = np.random.default_rng(0).permutation(y)
    same = np.zeros((100, 2))
    assert mixture_label_information(shuffled, same, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="Expected `noise_variance` > 0"):
        mixture_mutual_information(np.zeros((3, 1)), 0.0)
    with pytest.raises(ValueError, match="Expected `bound` to be one of"):
        mixture_mutual_information(np.zeros((3, 1)), 1.0, bound="middle")
    with pytest.raises(ValueError, match="Expected finite `t`"):
        mixture_mutual_information(np.array([[np.nan]]), 1.0)
    with pytest.raises(ValueError, match="Expected `labels` to be 3 integer labels"):
        mixture_label_information(np.zeros(3), np.zeros((3, 1)), 1.0)


def test_label_information_is_biased_upward_not_a_bound():
    # One Gaussian unit, y = 1[t > 0], X uniform on the samples: the exact
    # I(Y; T + eps) = H(Z) - sum_y p(y) H(Z | y) of the finite mixtures by quadrature on a
    # grid. The difference of two upper bounds (the plane's kde i_y) lies above it, by
    # 1.2x at variance 0.1 and 1.5x at 0.5; the difference of lower bounds below it.
    from scipy import special

    t = np.random.default_rng(0).standard_normal(1000)
    y = (t > 0).astype(np.int64)
    grid = np.linspace(-9.0, 9.0, 36001)

    def mixture_entropy(centres, variance):
        log_p = (special.logsumexp(-(grid[:, None] - centres[None, :]) ** 2 / (2 * variance), axis=1)
                 - np.log(len(centres)) - 0.5 * np.log(2 * np.pi * variance))
        return float(-np.sum(np.exp(log_p) * log_p) * (grid[1] - grid[0]))

    for variance, ratio in ((0.1, 1.15), (0.5, 1.4)):
        exact = mixture_entropy(t, variance) - sum(
            np.mean(y == c) * mixture_entropy(t[y == c], variance) for c in (0, 1))
        upper = mixture_label_information(y, t[:, None], variance)
        lower = mixture_label_information(y, t[:, None], variance, bound="lower")
        assert upper > ratio * exact and lower < exact < np.log(2)
