"""Information quantities: Gaussian closed forms, variational bounds, critic-based, kNN and discrete estimators."""

from tfinfo.information import bounds
from tfinfo.information.bounds import ESTIMATORS
from tfinfo.information.bounds import Bound
from tfinfo.information.bounds import dv_bound
from tfinfo.information.bounds import evaluate_bound
from tfinfo.information.bounds import infonce_bound
from tfinfo.information.bounds import js_bound
from tfinfo.information.bounds import log_mean_exp
from tfinfo.information.bounds import mine_bound
from tfinfo.information.bounds import nwj_bound
from tfinfo.information.bounds import smile_bound
from tfinfo.information.bounds import split_scores
from tfinfo.information.discrete import bin_activations
from tfinfo.information.discrete import binned_mutual_information
from tfinfo.information.discrete import conditional_entropy
from tfinfo.information.discrete import discrete_entropy
from tfinfo.information.discrete import discrete_mutual_information
from tfinfo.information.estimate import estimate_mutual_information
from tfinfo.information.gaussian import gaussian_lautum_information
from tfinfo.information.gaussian import gaussian_mutual_information
from tfinfo.information.ksg import ksg_mutual_information
from tfinfo.information.ksg import mixed_ksg_mutual_information
from tfinfo.information.mmd import MMD_ESTIMATORS
from tfinfo.information.mmd import gaussian_kernel_bandwidths
from tfinfo.information.mixture import mixture_label_information
from tfinfo.information.mixture import mixture_mutual_information
from tfinfo.information.mmd import mmd2
from tfinfo.information.noise_regularized import NOISE_REGULARIZED_CRITICS
from tfinfo.information.noise_regularized import noise_regularized_mutual_information

__all__ = [
    "ESTIMATORS",
    "MMD_ESTIMATORS",
    "NOISE_REGULARIZED_CRITICS",
    "Bound",
    "bin_activations",
    "binned_mutual_information",
    "bounds",
    "conditional_entropy",
    "discrete_entropy",
    "discrete_mutual_information",
    "dv_bound",
    "estimate_mutual_information",
    "evaluate_bound",
    "gaussian_lautum_information",
    "gaussian_kernel_bandwidths",
    "gaussian_mutual_information",
    "infonce_bound",
    "js_bound",
    "ksg_mutual_information",
    "mixed_ksg_mutual_information",
    "log_mean_exp",
    "mine_bound",
    "mixture_label_information",
    "mixture_mutual_information",
    "mmd2",
    "noise_regularized_mutual_information",
    "nwj_bound",
    "smile_bound",
    "split_scores",
]
