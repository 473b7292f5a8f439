"""The embedded default: sklearn's handwritten digits -> letters A-J rendered from fonts.

It is `TransferConfig()`, the one default of `tfinfo-transfer` (whatever data flags are
given): small CNN, batch 50, dropout 0.2 and input noise 0.05, 16 epochs of stage 1 and
60 of stage 2, Lautum lambda 0.01 with EMA decay 0.999, and Temporal Ensembling's CPU
budget (20 epochs over the labeled images and 500 unlabeled ones, ramp-up 8). The
reasons for each value are beside the fields in `trainers/config.py`.
"""

from trainers.config import TransferConfig


def get_config():
    return TransferConfig()
