"""Seed 000, Table 3: CIFAR-10 -> CIFAR-100 (classes 0, 10, ..., 90), 100 / 200 / 500 labeled."""

from configs.cifar10_cifar100 import get_config
from trainers.config import CompareConfig


def get_compare_config():
    return CompareConfig(
        base=get_config().replace(verbose=2),
        methods=("standard", "te", "mmd", "lautum_mi", "lautum", "lautum_te", "mi"),
        labeled=(100, 200, 500),
        seeds=(0, 1, 2),
        paper="cifar10_cifar100",
    )
