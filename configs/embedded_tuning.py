"""The base of the tuning study on the embedded default (docs/results.md, "Tuned comparison").

The README's main job (`configs/embedded.py`) without the per-epoch Lautum probe, which
only logs and does not change training (it restores the generators it draws from), and
quiet fits. Every method's search starts from it:

  tfinfo-tune --config configs/embedded_tuning.py --method standard --labeled 50 --seed 100 ...

(the exact commands, spaces and budgets are in docs/results.md).
"""

from configs.embedded import get_config as _embedded


def get_config():
    return _embedded().replace(lautum_probe=0, verbose=0)
