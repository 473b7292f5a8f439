"""Seed 000, Table 1: MNIST -> notMNIST, seven methods, 50 / 100 / 200 labeled, 3 seeds."""

from configs.mnist_notmnist import get_config
from trainers.config import CompareConfig


def get_compare_config():
    return CompareConfig(
        base=get_config().replace(verbose=2),
        methods=("standard", "te", "mmd", "lautum_mi", "lautum", "lautum_te", "mi"),
        labeled=(50, 100, 200),
        seeds=(0, 1, 2),
        paper="mnist_notmnist",
    )
