"""Distribution cases: `case(jit_compile) -> (model, dataset)` (see `harness.py`).

Small shapes, dropout and input noise off (replicas would draw different masks),
SGD so that the update is linear in the gradient, two global batches of 8. The models
with double backprop or critic loops wrap a tiny classifier (tracing the paper's CNN
there costs seconds per mode). Learning rates and weights are such that the epoch moves
the weights by a few percent: a diverging step would make any comparison meaningless.
"""

import keras
import numpy as np
import tensorflow as tf

from tfinfo.architectures import build_classifier

SHAPE = (8, 8, 1)
CLASSES = 3
BATCH = 8
STEPS = 2


def _classifier():
    return build_classifier(
        "small", input_shape=SHAPE, num_classes=CLASSES, image_size=12, dropout=0.0, noise_stddev=0.0, seed=0
    )


def _tiny_classifier():
    """A functional classifier with a `"features"` layer, small enough that tracing the
    double backprop (Lautum) and critic loops stays quick: rescale, one 3x3 convolution,
    dense features, logits. Smooth activations, so second derivatives are not zero."""
    init = iter(range(10))

    def kernel():
        return keras.initializers.GlorotUniform(seed=next(init))

    inputs = keras.Input(SHAPE, name="images")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="tanh", kernel_initializer=kernel())(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="tanh", kernel_initializer=kernel(), name="features")(x)
    logits = keras.layers.Dense(CLASSES, kernel_initializer=kernel(), name="logits")(x)
    return keras.Model(inputs, logits, name="tiny")


def _images(n, seed, low=0.0, high=255.0):
    return np.random.default_rng(seed).uniform(low, high, size=(n,) + SHAPE).astype("float32")


def _labels(n, seed):
    return np.random.default_rng(seed).integers(0, CLASSES, size=n).astype("int32")


def _sgd(learning_rate, initial_scale=2.0**8):
    """SGD; under `mixed_float16` in a `LossScaleOptimizer` starting at `initial_scale`.

    The regularizers' gradients are large at initialization: from Keras's default
    initial scale 2^15 the dynamic loss scale would overflow, skip and halve on both
    steps of the epoch, and there would be nothing to compare. (Under Lautum the
    gradient reaching the half-precision double backprop is about `1 / std(w)`.)
    """
    optimizer = keras.optimizers.SGD(learning_rate)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=initial_scale)
    return optimizer


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def source_target_dataset():
    """`((x_source, x_target), y_source)` global batches."""
    n = BATCH * STEPS
    return tf.data.Dataset.from_tensor_slices(((_images(n, 1), _images(n, 2, 0.0, 128.0)), _labels(n, 3))).batch(BATCH)


def standard(jit_compile):
    """The plain classifier under `fit` (standard transfer, both stages)."""
    model = _classifier()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=_ce(), metrics=["accuracy"], jit_compile=jit_compile)
    n = BATCH * STEPS
    return model, tf.data.Dataset.from_tensor_slices((_images(n, 1), _labels(n, 3))).batch(BATCH)


def mmd(jit_compile):
    """Mk-MMD transfer: the MMD^2 of the all-gathered global batch."""
    from tfinfo.models import MMDTransferModel
    from tfinfo.regularizers import MMDRegularizer

    model = MMDTransferModel(_classifier(), MMDRegularizer(), mmd_weight=0.3)
    model.compile(optimizer=_sgd(0.05), loss=_ce(), jit_compile=jit_compile)
    return model, source_target_dataset()


def _target_images(n=64, seed=4):
    """Unlabeled target images for `adapt` (the same distribution as the batches' targets)."""
    return _images(n, seed, 0.0, 128.0)


def _lautum_model(jit_compile, **regularizer_kwargs):
    from tfinfo.models import LautumTransferModel
    from tfinfo.regularizers import LautumRegularizer

    resample = regularizer_kwargs.pop("resample_projection", "epoch")
    # EMA decay 0.9 (not the paper's 0.999) so that two steps move the moving averages.
    regularizer = LautumRegularizer(
        num_outputs=CLASSES, ema_decay=0.9, seed=0, input_shape_hint=SHAPE, **regularizer_kwargs
    )
    model = LautumTransferModel(_tiny_classifier(), regularizer, lautum_weight=3e-3, resample_projection=resample)
    model.adapt(_target_images())
    model.compile(optimizer=_sgd(0.05, initial_scale=2.0**4), loss=_ce(), jit_compile=jit_compile)
    return model


def lautum(jit_compile):
    """Lautum transfer, fast mode (the default): the joint covariance, its inverses and
    log-dets (rank-n updates) and the value of the all-gathered global target batch."""
    from tfinfo.callbacks import ProjectionResampler

    # float64 covariance work: the comparison with one device is to 1e-5 per variable,
    # and the float32 eigenvectors the layer tracks differ by ~1e-5 with the order of
    # the all-gathered sums (the default float32 is covered by the other Lautum cases).
    model = _lautum_model(jit_compile, refresh_every=2, precision="float64")
    return model, source_target_dataset(), [ProjectionResampler()]


def lautum_exact(jit_compile):
    """Lautum transfer, exact mode (an eigendecomposition every step), on 16 principal
    components, with a projection vector redrawn inside every step (the replicas' seed
    generators draw the same vector)."""
    model = _lautum_model(jit_compile, mode="exact", projection_dim=16, resample_projection="step")
    return model, source_target_dataset()


def _mi_model(jit_compile, estimator="smile", critic_steps=2, lautum=False, critic_optimizer=None, marginal="shuffle"):
    from tfinfo.critics import ConcatCritic
    from tfinfo.critics import SeparableCritic
    from tfinfo.models import MutualInformationTransferModel
    from tfinfo.regularizers import LautumRegularizer
    from tfinfo.regularizers import MutualInformationRegularizer

    critic = SeparableCritic((16,), embedding_dim=8) if marginal == "all_pairs" else ConcatCritic((16, 16))
    regularizer = MutualInformationRegularizer(critic, estimator=estimator, marginal=marginal, decay=0.5, seed=0)
    lautum_regularizer = None
    if lautum:
        lautum_regularizer = LautumRegularizer(num_outputs=CLASSES, ema_decay=0.9, seed=0, input_shape_hint=SHAPE)
    model = MutualInformationTransferModel(
        _tiny_classifier(),
        regularizer,
        mi_weight=0.5,
        critic_steps=critic_steps,
        lautum_regularizer=lautum_regularizer,
        lautum_weight=3e-3 if lautum else 0.0,
    )
    model.adapt(_target_images())
    model.compile(
        optimizer=_sgd(0.05, initial_scale=2.0**4),
        critic_optimizer=critic_optimizer or keras.optimizers.Adam(1e-2),
        loss=_ce(),
        jit_compile=jit_compile,
    )
    return model


def mi_smile(jit_compile):
    """MI transfer, SMILE: two critic steps (Adam, its own slots) on fresh marginal
    shuffles of the global batch, then the classifier step against the fixed critic."""
    return _mi_model(jit_compile), source_target_dataset()


def mi_mine(jit_compile):
    """MI transfer, MINE: the moving average of the marginal term is state.

    The critic trains with SGD and momentum: on MINE's first step the moving average is
    the batch's own mean, so the gradient of the score's bias is 0 up to rounding, which
    Adam would blow up to a full step of either sign.
    """
    critic_optimizer = keras.optimizers.SGD(0.1, momentum=0.5)
    model = _mi_model(jit_compile, estimator="mine", critic_steps=1, critic_optimizer=critic_optimizer)
    return model, source_target_dataset()


def mi_all_pairs(jit_compile):
    """MI transfer, SMILE on every pair of the global batch with a separable critic (each
    replica scores its rows of the score matrix). Not InfoNCE: it is blind to a constant
    added to a row of scores, so the gradient of `h`'s output bias would be rounding
    noise, and a comparison of that bias meaningless."""
    return _mi_model(jit_compile, marginal="all_pairs", critic_steps=1), source_target_dataset()


def lautum_mi(jit_compile):
    """Lautum + MI transfer: both regularizers on the same target batch."""
    from tfinfo.callbacks import ProjectionResampler

    return _mi_model(jit_compile, lautum=True, critic_steps=1), source_target_dataset(), [ProjectionResampler()]


def temporal_ensembling(jit_compile):
    """Temporal Ensembling, one epoch after a first ensemble update (so the consistency
    term is on): the rows of `z_epoch` are the global batch's, and the epoch-end update
    of the ensemble and targets by the callback follows from them. Not reshuffled: under
    a strategy Keras's `fit` opens one iterator of the dataset before the first epoch (to
    build the model symbolically), so a reshuffling dataset would start from its second
    order there and from its first on one device."""
    from tfinfo.callbacks import TemporalEnsemblingUpdate
    from tfinfo.data.temporal_ensembling import temporal_ensembling_dataset
    from tfinfo.models import TemporalEnsemblingModel

    x_labeled, y_labeled = _images(6, 5), _labels(6, 6)
    dataset, n = temporal_ensembling_dataset(
        x_labeled, y_labeled, _images(10, 7), batch_size=BATCH, seed=0, shuffle=False
    )
    model = TemporalEnsemblingModel(_tiny_classifier(), n, len(x_labeled), rampup_epochs=2)
    model.compile(optimizer=_sgd(0.05), loss=_ce(), jit_compile=jit_compile)
    # A first ensemble update from fixed outputs: epoch 1 has targets and a ramped weight.
    model.z_epoch.assign(tf.nn.softmax(np.random.default_rng(8).normal(size=(n, CLASSES)).astype("float32")))
    model.update_ensemble()
    return model, dataset, [TemporalEnsemblingUpdate()]
