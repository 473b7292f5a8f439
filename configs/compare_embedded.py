"""The comparison on the embedded default (digits -> letters A-J), small CNN, CPU-sized."""

from configs.embedded import get_config
from trainers.config import CompareConfig


def get_compare_config():
    return CompareConfig(
        base=get_config().replace(verbose=0, lautum_mode="fast"),
        methods=("standard", "te", "mmd", "lautum_mi", "lautum", "lautum_te", "mi", "ctc"),
        labeled=(50, 100, 200),
        seeds=(0, 1, 2),
        paper=None,  # different data from the paper's MNIST -> notMNIST: no paper column
    )
