"""Seed 000, section 5.2: MNIST -> notMNIST (letters A-J), Adam, batch 50, 32x32 RGB.

notMNIST is not in TFDS: download and unpack the public archive yourself (see
docs/datasets.md), so that `notMNIST_large/A` .. `notMNIST_large/J` hold the letter
images, in the folder you run from or wherever `$TFINFO_NOTMNIST_DIR` points.
MNIST comes from TFDS (`$TFDS_DATA_DIR` for a prepared copy without network).
"""

import logging
import os

from trainers.config import TransferConfig

NOTMNIST_ENV = "TFINFO_NOTMNIST_DIR"
NOTMNIST_DEFAULT = "notMNIST_large"
CLASS_FOLDERS = tuple("ABCDEFGHIJ")


def notmnist_dir():
    """The notMNIST folder: `$TFINFO_NOTMNIST_DIR`, else ./notMNIST_large, absolute."""
    return os.path.abspath(os.path.expanduser(os.environ.get(NOTMNIST_ENV) or NOTMNIST_DEFAULT))


def check_notmnist_dir(path):
    """Raises a ValueError naming `path` and docs/datasets.md unless it holds A..J."""
    missing = [c for c in CLASS_FOLDERS if not os.path.isdir(os.path.join(path, c))]
    if missing:
        found = "does not exist" if not os.path.isdir(path) else f"lacks the folders {missing}"
        raise ValueError(
            f"Expected the notMNIST letters in {path}/A .. {path}/J (one folder of images per "
            f"letter; set ${NOTMNIST_ENV} to use another folder; docs/datasets.md says how to "
            f"get them). Received: {path} {found}")


def get_config():
    target = notmnist_dir()
    try:
        check_notmnist_dir(target)
    except ValueError as error:
        # Not raised here, so that the config can be read without the data (tests,
        # `tfinfo-compare` listings); the run refuses it when it loads the target.
        logging.getLogger("tfinfo").warning("%s", error)
    return TransferConfig(
        method="lautum",
        source="tfds:mnist",
        target=f"dir:{target}",  # folders A..J of the public notMNIST archive
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
