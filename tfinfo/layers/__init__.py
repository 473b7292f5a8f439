"""Keras layers of tfinfo."""

from tfinfo.layers.image_preprocessing import ImagePreprocessing

__all__ = ["ImagePreprocessing"]
