"""Callbacks for `model.fit`."""

from tfinfo.callbacks.critic_schedule import CriticSchedule
from tfinfo.callbacks.projection_resampler import ProjectionResampler

__all__ = ["CriticSchedule", "ProjectionResampler"]
