"""Regularizers, one per file."""

from tfinfo.regularizers.lautum import LautumRegularizer

__all__ = ["LautumRegularizer"]
