"""One default recipe whatever the data flags, and the stage-2 convergence record."""

import logging
import types

import numpy as np
import pytest

from trainers.config import TransferConfig
from trainers.config import config_from_flags


def _flags(**given):
    names = ("config", "source", "target", "method", "labeled", "dropout", "pretrain_epochs")
    return types.SimpleNamespace(**{name: given.get(name) for name in names})


def test_the_embedded_config_is_the_one_default():
    from configs.embedded import get_config

    assert get_config() == TransferConfig()
    default = TransferConfig()
    # The recipe the embedded default was tuned with (not the paper's 0.5 / 0.15 / 8 / 40).
    assert (default.dropout, default.noise_stddev, default.pretrain_epochs, default.finetune_epochs) == (
        0.2, 0.05, 16, 60)


@pytest.mark.parametrize("data", [{}, {"source": "embedded", "target": "embedded"},
                                  {"source": "npz:a.npz"}, {"target": "tfds:mnist"}])
def test_data_flags_change_only_the_data(data):
    overrides = ("source", "target", "method", "labeled", "dropout", "pretrain_epochs")
    config = config_from_flags(_flags(**data, method="standard", labeled=50), overrides)
    assert config == TransferConfig().replace(method="standard", labeled=50, **data)
    # So `--source embedded --target embedded` trains exactly as no data flags at all.
    differing = {k for k, v in config.to_dict().items() if v != TransferConfig().to_dict()[k]}
    assert differing == {"method", "labeled"} | set(data)


def test_the_paper_configs_write_out_the_paper_settings():
    from configs.cifar10_cifar100 import get_config as cifar
    from configs.mnist_notmnist import get_config as mnist

    for config in (mnist(), cifar()):
        assert (config.dropout, config.noise_stddev, config.architecture) == (0.5, 0.15, "paper")
        assert (config.te_rampup_epochs, config.te_epochs, config.te_unlabeled) == (80, None, None)


def _identity_classifier():
    import keras

    classifier = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, use_bias=False)])
    classifier.layers[-1].kernel.assign(np.eye(4, dtype=np.float32))
    return classifier


@pytest.mark.parametrize("wrong, converged", [(0, True), (1, True), (2, False), (100, False)])
def test_stage2_convergence_is_fitting_the_labeled_images(caplog, wrong, converged):
    from trainers.pipeline import stage2_convergence

    y = np.arange(100) % 4
    x = np.eye(4, dtype=np.float32)[y]  # the identity classifier predicts y exactly
    labels = y.copy()
    labels[:wrong] = (labels[:wrong] + 1) % 4  # `wrong` of 100 labels it cannot fit
    data = types.SimpleNamespace(x_labeled=x, y_labeled=labels)
    config = TransferConfig(finetune_epochs=7, finetune_learning_rate=3e-4)
    history = {"loss": [2.0, 0.31], "accuracy": [0.2, 0.97], "note": "not a curve"}
    with caplog.at_level(logging.WARNING, logger="tfinfo"):
        facts = stage2_convergence(_identity_classifier(), data, config, history)
    assert facts["labeled_accuracy"] == pytest.approx(1.0 - wrong / 100)
    assert facts["converged"] is converged
    assert (facts["final_train_loss"], facts["final_train_accuracy"], facts["epochs"]) == (0.31, 0.97, 2)
    warned = [r.getMessage() for r in caplog.records if "stage 2 did not converge" in r.getMessage()]
    if converged:
        assert not warned
    else:
        (message,) = warned
        assert f"fits {100 - wrong:.1f}% of its 100 labeled images" in message
        assert "--finetune_epochs (now 7)" in message and "0.0003" in message


@pytest.mark.parametrize("method, te_epochs, named", [
    ("te", 9, "--te_epochs (now 9)"), ("lautum_te", 9, "--te_epochs (now 9)"),
    ("te", None, "--finetune_epochs (now 7)"), ("standard", 9, "--finetune_epochs (now 7)")])
def test_the_warning_names_the_epochs_field_the_method_reads(caplog, method, te_epochs, named):
    from trainers.pipeline import stage2_convergence

    y = np.arange(8) % 4
    data = types.SimpleNamespace(x_labeled=np.eye(4, dtype=np.float32)[y], y_labeled=(y + 1) % 4)  # none fitted
    config = TransferConfig(method=method, finetune_epochs=7, te_epochs=te_epochs)
    with caplog.at_level(logging.WARNING, logger="tfinfo"):
        assert stage2_convergence(_identity_classifier(), data, config, {})["converged"] is False
    (message,) = [r.getMessage() for r in caplog.records if "stage 2 did not converge" in r.getMessage()]
    assert named in message


@pytest.mark.parametrize("cli, build", [
    ("trainers.transfer", "module.build_config().te_epochs"),
    ("trainers.tune", "module.build_config().te_epochs"),
    ("trainers.compare", "flags.FLAGS.te_epochs")])
def test_te_epochs_is_a_flag_of_transfer_tune_and_compare(cli, build):
    import subprocess
    import sys

    code = (f"import importlib; from absl import flags; module = importlib.import_module({cli!r}); "
            f"flags.FLAGS(['x', '--te_epochs', '5']); print({build})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "5"
