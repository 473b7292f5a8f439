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
        batch_size=50,
        pretrain_epochs=30,
        finetune_epochs=100,
        ema_decay=0.999,
        lautum_mode="fast",
    )
