"""Regularizers, one per file."""

from tfinfo.regularizers.activation_l2 import ActivationL2Regularizer
from tfinfo.regularizers.conditional_log_variance import ConditionalLogVarianceRegularizer
from tfinfo.regularizers.lautum import LautumRegularizer
from tfinfo.regularizers.log_variance import LogVarianceRegularizer
from tfinfo.regularizers.mmd import MMDRegularizer
from tfinfo.regularizers.mutual_information import MutualInformationRegularizer

__all__ = [
    "ActivationL2Regularizer",
    "ConditionalLogVarianceRegularizer",
    "LautumRegularizer",
    "LogVarianceRegularizer",
    "MMDRegularizer",
    "MutualInformationRegularizer",
]
