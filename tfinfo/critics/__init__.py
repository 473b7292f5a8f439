"""MINE critic networks and the sampling of their joint and marginal scores."""

from tfinfo.critics.architecture_aware_critic import ArchitectureAwareCritic
from tfinfo.critics.concat_critic import CRITIC_PRESETS
from tfinfo.critics.concat_critic import ConcatCritic
from tfinfo.critics.marginals import CriticScores
from tfinfo.critics.marginals import critic_scores
from tfinfo.critics.separable_critic import SeparableCritic

__all__ = [
    "ArchitectureAwareCritic",
    "CRITIC_PRESETS",
    "ConcatCritic",
    "CriticScores",
    "SeparableCritic",
    "critic_scores",
]
