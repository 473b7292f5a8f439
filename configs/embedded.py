"""The embedded default: sklearn's handwritten digits -> letters A-J rendered from fonts."""

from trainers.config import TransferConfig


def get_config():
    return TransferConfig(
        method="lautum",
        source=None,  # embedded digits
        target=None,  # embedded letters A-J
        labeled=100,
        architecture="small",
        batch_size=50,
        # 1,438 source images are far fewer than MNIST's 60,000: lighter dropout and
        # noise than the paper's 0.5 / 0.15 let the small CNN learn them in a few epochs.
        dropout=0.2,
        noise_stddev=0.05,
        pretrain_epochs=10,
        finetune_epochs=60,
        lautum_weight=0.01,
        ema_decay=0.999,
        # Temporal Ensembling (te, lautum_te) on a CPU: 20 epochs over the labeled images
        # and 500 of the ~4,600 unlabeled ones, the consistency weight ramped up over the
        # first 8 (Laine & Aila: 300 epochs, ramp-up 80, on a GPU).
        te_epochs=20,
        te_rampup_epochs=8,
        te_unlabeled=500,
    )
