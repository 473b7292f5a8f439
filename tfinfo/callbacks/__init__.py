"""Callbacks for `model.fit`."""

from tfinfo.callbacks.critic_schedule import CriticSchedule
from tfinfo.callbacks.critic_warmup import CriticWarmup
from tfinfo.callbacks.information_plane import InformationPlane
from tfinfo.callbacks.lautum_probe import LautumProbe
from tfinfo.callbacks.non_finite_guard import NonFiniteGuard
from tfinfo.callbacks.non_finite_guard import NonFiniteTermError
from tfinfo.callbacks.projection_resampler import ProjectionResampler
from tfinfo.callbacks.temporal_ensembling_update import TemporalEnsemblingUpdate
from tfinfo.callbacks.transferability_probe import TransferabilityProbe

__all__ = ["CriticSchedule", "CriticWarmup", "InformationPlane", "LautumProbe", "NonFiniteGuard", "NonFiniteTermError", "ProjectionResampler", "TemporalEnsemblingUpdate", "TransferabilityProbe"]
