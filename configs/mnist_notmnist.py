"""Seed 000, section 5.2: MNIST -> notMNIST (letters A-J), Adam, batch 50, 32x32 RGB."""

from trainers.config import TransferConfig


def get_config():
    return TransferConfig(
        method="lautum",
        source="tfds:mnist",
        target="dir:notMNIST_large",  # folders A..J of the public notMNIST archive
        labeled=100,  # the paper reports 50 / 100 / 200
        architecture="paper",
        image_size=32,
        channels=3,
        dropout=0.5,  # Laine & Aila's network, as the paper
        noise_stddev=0.15,
        batch_size=50,
        pretrain_epochs=30,
        finetune_epochs=100,
        ema_decay=0.999,
        te_rampup_epochs=80,  # Laine & Aila
        te_epochs=None,  # = finetune_epochs
        te_unlabeled=None,  # all of them
        lautum_mode="fast",
    )
