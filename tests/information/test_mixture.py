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
