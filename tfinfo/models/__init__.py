"""Keras models whose `train_step` implements a training scheme."""

from tfinfo.models.lautum_transfer_model import LautumTransferModel

__all__ = ["LautumTransferModel"]
