"""Callbacks for `model.fit`."""

from tfinfo.callbacks.projection_resampler import ProjectionResampler

__all__ = ["ProjectionResampler"]
