"""Ablations of the tuned Lautum run (docs/results.md, "Ablation"), one arm per workdir.

Each arm is `lautum` of `configs/compare_tuned.py` with one setting changed, on seeds
0-4 at 50 and 100 labels; the tuned `standard` runs of that comparison (same seeds, so
the same splits and initializations) are the pairs:

  TFINFO_ABLATION=inference_proxy tfinfo-compare --config configs/compare_lautum_ablation.py \\
      --workdir runs/ablation_inference_proxy --pair_with runs/compare_tuned
  TFINFO_ABLATION=pca64 tfinfo-compare --config configs/compare_lautum_ablation.py \\
      --workdir runs/ablation_pca64 --pair_with runs/compare_tuned

`--pair_with` writes `paired_with.md`: the arm against the tuned `lautum` (the one-setting
change) and against the tuned `standard` and `mi`, seed by seed.
"""

import os

from configs.compare_tuned import get_compare_config as _tuned

ARMS = {
    # The Jacobian proxy with dropout and input noise off (the default takes it in
    # training mode, as the classifier is in training mode in the step).
    "inference_proxy": {"lautum_proxy": "inference"},
    # 64 principal components of the target set instead of the 784 pixels.
    "pca64": {"projection_dim": 64},
    # The covariance work in float64 (the default is float32).
    "float64": {"lautum_precision": "float64"},
    # The eigendecomposition every step instead of the rank-n updates.
    "exact": {"lautum_mode": "exact"},
    # A shorter covariance memory: about 100 steps instead of about 1,000 (the run is
    # about 400 steps, so at 0.999 the averages still remember the first weights).
    "ema_0.99": {"ema_decay": 0.99},
}


def get_compare_config():
    arm = os.environ.get("TFINFO_ABLATION")
    if arm not in ARMS:
        raise ValueError(f"Expected TFINFO_ABLATION to be one of {sorted(ARMS)}. Received: {arm!r}")
    tuned = _tuned()
    overrides = {**tuned.method_overrides["lautum"], **ARMS[arm]}
    return tuned.__class__(
        base=tuned.base,
        methods=("lautum",),
        labeled=tuned.labeled,
        seeds=tuple(range(5)),
        paper=None,
        method_overrides={"lautum": overrides},
        baseline=None,
    )
