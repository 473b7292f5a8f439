"""Keras models whose `train_step` implements a training scheme."""

from tfinfo.models.lautum_transfer_model import LautumTransferModel
from tfinfo.models.mutual_information_transfer_model import MutualInformationTransferModel
from tfinfo.models.temporal_ensembling_model import TemporalEnsemblingModel

__all__ = ["LautumTransferModel", "MutualInformationTransferModel", "TemporalEnsemblingModel"]
