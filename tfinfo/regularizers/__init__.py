"""Regularizers, one per file."""

from tfinfo.regularizers.lautum import LautumRegularizer
from tfinfo.regularizers.mmd import MMDRegularizer
from tfinfo.regularizers.mutual_information import MutualInformationRegularizer

__all__ = ["LautumRegularizer", "MMDRegularizer", "MutualInformationRegularizer"]
