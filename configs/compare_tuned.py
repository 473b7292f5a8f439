"""Tuned standard transfer against tuned Lautum / MI regularization on the embedded default.

The study of docs/results.md ("Tuned comparison"): every hyperparameter below was chosen
by `tfinfo-tune` on a validation split of the labeled target images (50 labels, data
seed 100, never the test set, never the evaluation seeds 0-9):

- the shared ones (both stages' learning rates and epochs, dropout, input noise) by 10
  random trials of `standard`, 2 trainings each;
- then, from those, lambda and the EMA decay of `lautum` and lambda and SMILE's tau of
  `mi` by 4 trials each (the base value first), 2 trainings each;
- `lautum_mi` takes both tuned lambdas.
"""

from configs.embedded import get_config
from trainers.config import CompareConfig

# runs/tune/standard/best_config.json (trial 03 of 10, validation accuracy 0.80).
TUNED_SHARED = dict(
    learning_rate=3.2187e-4,
    finetune_learning_rate=3.0330e-4,
    pretrain_epochs=14,
    finetune_epochs=104,
    dropout=0.12005,
    noise_stddev=0.10665,
)
# runs/tune/lautum/best_config.json and runs/tune/mi/best_config.json.
TUNED_LAUTUM = dict(lautum_weight=0.01, ema_decay=0.999)  # trial 0 of 4 (the base), validation 0.75
TUNED_MI = dict(mi_weight=0.086527, mi_tau=9.6399)  # trial 2 of 4, validation 0.85 (base 0.75)


def get_compare_config():
    return CompareConfig(
        base=get_config().replace(verbose=0, **TUNED_SHARED),
        methods=("standard", "lautum", "mi", "lautum_mi"),
        labeled=(50, 100),
        seeds=tuple(range(10)),
        paper=None,
        method_overrides={"lautum": TUNED_LAUTUM, "mi": TUNED_MI, "lautum_mi": {**TUNED_LAUTUM, **TUNED_MI}},
    )
