"""Penalty terms of a `RegularizedTransferModel`'s loss: each wraps one regularizer."""

from tfinfo.penalties.lautum_penalty import LautumPenalty
from tfinfo.penalties.mmd_penalty import MMDPenalty
from tfinfo.penalties.mutual_information_penalty import MutualInformationPenalty
from tfinfo.penalties.penalty_term import INPUTS
from tfinfo.penalties.penalty_term import Penalty
from tfinfo.penalties.penalty_term import PenaltyTerm

__all__ = ["INPUTS", "LautumPenalty", "MMDPenalty", "MutualInformationPenalty", "Penalty", "PenaltyTerm"]
