"""Keras models whose `train_step` implements a training scheme."""

from tfinfo.models.information_aggregation_model import InformationAggregationModel
from tfinfo.models.information_bottleneck_model import InformationBottleneckModel
from tfinfo.models.information_revitalization_model import InformationRevitalizationModel
from tfinfo.models.lautum_transfer_model import LautumTransferModel
from tfinfo.models.layer_by_layer import LayerByLayerResult
from tfinfo.models.layer_by_layer import train_layer_by_layer
from tfinfo.models.mmd_transfer_model import MMDTransferModel
from tfinfo.models.mutual_information_transfer_model import MutualInformationTransferModel
from tfinfo.models.regularized_transfer_model import RegularizedTransferModel
from tfinfo.models.surrogate_bottleneck_model import SurrogateBottleneckModel
from tfinfo.models.temporal_ensembling_model import TemporalEnsemblingModel

__all__ = [
    "InformationAggregationModel",
    "InformationBottleneckModel",
    "InformationRevitalizationModel",
    "LautumTransferModel",
    "LayerByLayerResult",
    "MMDTransferModel",
    "MutualInformationTransferModel",
    "RegularizedTransferModel",
    "SurrogateBottleneckModel",
    "TemporalEnsemblingModel",
    "train_layer_by_layer",
]
