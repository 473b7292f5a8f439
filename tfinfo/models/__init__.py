"""Keras models whose `train_step` implements a training scheme."""

from tfinfo.models.information_aggregation_model import InformationAggregationModel
from tfinfo.models.information_bottleneck_model import InformationBottleneckModel
from tfinfo.models.information_revitalization_model import InformationRevitalizationModel
from tfinfo.models.lautum_transfer_model import LautumTransferModel
from tfinfo.models.mmd_transfer_model import MMDTransferModel
from tfinfo.models.mutual_information_transfer_model import MutualInformationTransferModel
from tfinfo.models.temporal_ensembling_model import TemporalEnsemblingModel

__all__ = [
    "InformationAggregationModel",
    "InformationBottleneckModel",
    "InformationRevitalizationModel",
    "LautumTransferModel",
    "MMDTransferModel",
    "MutualInformationTransferModel",
    "TemporalEnsemblingModel",
]
