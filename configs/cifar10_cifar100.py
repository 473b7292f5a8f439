"""Seed 000, section 5.3: CIFAR-10 -> CIFAR-100 classes 0,10,...,90 relabeled 0..9.

Both come from TFDS: prepared in `$TFDS_DATA_DIR` (default ~/tensorflow_datasets), or
downloaded on the first run. Without network, see docs/datasets.md.
"""

from trainers.config import TransferConfig


def get_config():
    return TransferConfig(
        method="lautum",
        source="tfds:cifar10",
        target="tfds:cifar100:classes=0,10,20,30,40,50,60,70,80,90",
        labeled=100,  # the paper reports 100 / 200 / 500
        architecture="paper",
        image_size=32,
        channels=3,
        dropout=0.5,  # Laine & Aila's network, as the paper
        noise_stddev=0.15,
        batch_size=100,
        pretrain_epochs=60,
        finetune_epochs=100,
        ema_decay=0.999,
        te_rampup_epochs=80,  # Laine & Aila
        te_epochs=None,  # = finetune_epochs
        te_unlabeled=None,  # all of them
        lautum_mode="fast",
    )
