"""Lautum / MI / Lautum+MI against standard transfer on the embedded default, CLI defaults.

Every run is the README's main job with another method, budget or seed; the table pairs
each method with `standard` seed by seed (same split, same initialization).
"""

from configs.embedded import get_config
from trainers.config import CompareConfig


def get_compare_config():
    return CompareConfig(
        base=get_config().replace(verbose=0),
        methods=("standard", "lautum", "mi", "lautum_mi"),
        labeled=(50, 100),
        seeds=tuple(range(10)),
        paper=None,
    )
