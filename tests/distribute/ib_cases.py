"""Distribution cases of the information-bottleneck toolkit and CTC (see `harness.py`).

`case(jit_compile) -> (model, dataset)`: small MLPs (a tiny CNN for CTC), two global
batches of 8 (the IB cases: of 12, split into `critic_steps + 1 = 3` parts of 4, two
rows of each on every replica), no dropout; SGD for the networks (the update is linear in the gradient)
and SGD with momentum for the critics (a slot per variable, still linear). The harness
compares every model variable (critics, MINE moving averages, AA-MINE copies and head
scales, memory banks) and the optimizers' variables (critic-optimizer slots).
"""

import keras
import numpy as np
import tensorflow as tf

BATCH = 8
STEPS = 2
FEATURES = 6
CLASSES = 3


def _inputs(n=BATCH * STEPS, seed=1, balanced_classes=None):
    """`(x, y)`; with `balanced_classes=k`, every batch holds each of labels `0..k-1` equally often."""
    rng = np.random.default_rng(seed)
    if balanced_classes is None:
        y = rng.integers(0, CLASSES, size=n).astype("int32")
    else:
        y = np.concatenate([rng.permutation(np.arange(BATCH) % balanced_classes) for _ in range(n // BATCH)])
        y = y.astype("int32")
    x = (1.5 * np.eye(CLASSES, FEATURES)[y] + rng.standard_normal((n, FEATURES))).astype("float32")
    return x, y


def _dataset(x, y, batch=BATCH):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _init(seed):
    return keras.initializers.GlorotUniform(seed=seed)


def _mlp(hidden=8, noise=False):
    inputs = keras.Input((FEATURES,))
    h = keras.layers.Dense(hidden, activation="tanh", kernel_initializer=_init(0), name="hidden")(inputs)
    if noise:
        from tfinfo.layers import ZeroEntropyNoise

        h = ZeroEntropyNoise(seed=5, name="noisy")(h)
    outputs = keras.layers.Dense(CLASSES, kernel_initializer=_init(1), name="logits")(h)
    return keras.Model(inputs, outputs, name="mlp")


def _ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# -- information bottleneck (seed 003) ---------------------------------------------


def _start_score_biases_away_from_zero(model, value=0.5):
    """Sets each critic's output bias to `value`.

    The DV value and MINE's gradient are invariant to a constant added to the critic, so
    the training is the same; but the score bias only moves by MINE's moving-average lag
    (its gradient `1 - E_q[e^T] / m` is a difference of two means near 1, whose float32
    rounding, about 3e-8, depends on the order of the sums: one device or two replicas).
    From 0 it ends near 1e-3 and a relative comparison would measure that rounding (up to
    2e-5 measured) rather than the distribution.
    """
    for regularizer in (model.x_regularizer, model.y_regularizer):
        critic = getattr(regularizer.critic, "head", regularizer.critic)
        critic.output_layer.bias.assign(np.full((1,), value, "float32"))


IB_BATCH = 12  # 3 parts (critic_steps + 1) of 4 rows, 2 per replica


def _ib(x_critic, jit_compile, phase="alternate", batch=IB_BATCH, compiled_loss=True, **kwargs):
    from tfinfo.models import InformationBottleneckModel

    x, y = _inputs(batch * STEPS)
    model = InformationBottleneckModel(
        _mlp(), alpha=1.0, beta=0.5, gamma=0.2, noise_variance=0.5, critic_steps=2, x_critic=x_critic, seed=0,
        **kwargs,
    )
    model.adapt(x)
    _start_score_biases_away_from_zero(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        critic_optimizer=keras.optimizers.SGD(0.2, momentum=0.9),
        loss=_ce() if compiled_loss else None,
        jit_compile=jit_compile,
    )
    model.set_phase(phase)
    return model, _dataset(x, y, batch)


def ib_mine(jit_compile):
    """End-to-end IB, concat MINE critics for I(X; Y_hat + eps) and I(Y; Y_hat)."""
    return _ib("mine", jit_compile)


def ib_aa_mine(jit_compile):
    """End-to-end IB with the architecture-aware critic (copy of the whole network)."""
    return _ib("aa_mine", jit_compile)


def ib_aa_mine_reuse(jit_compile):
    """End-to-end IB, AA-MINE, the former schedule: every critic update on the whole batch."""
    return _ib("aa_mine", jit_compile, critic_batches="reuse")


def ib_uneven_parts(jit_compile):
    """End-to-end IB, global batches of 10 in 3 interleaved parts: replica 0 holds rows
    0-4 and replica 1 rows 5-9, so the network's part (global rows 2, 5, 8) is split 1 | 2
    and a critic part (1, 4, 7) 2 | 1. The plain CE (no compiled loss) is each replica's
    sum over its rows divided by the part's global count: one device's mean."""
    return _ib("mine", jit_compile, batch=10, compiled_loss=False)


def ib_critic_phase(jit_compile):
    """The critic warm-up phase (`set_phase("critic")`): critics only, network fixed."""
    return _ib("aa_mine", jit_compile, phase="critic")


def ib_mine_gathered_inputs(jit_compile):
    """End-to-end IB whose regularizers do not gather across replicas themselves
    (`cross_replica=False`): the model gives them the all-gathered global batch."""
    from tfinfo.critics import ConcatCritic
    from tfinfo.regularizers import MutualInformationRegularizer

    def regularizer(seed):
        return MutualInformationRegularizer(
            ConcatCritic("small"), estimator="mine", seed=seed, cross_replica=False
        )

    return _ib("mine", jit_compile, x_regularizer=regularizer(0), y_regularizer=regularizer(1))


def ib_layer_stage(jit_compile):
    """One stage of `train_layer_by_layer` (layer `hidden`, AA-MINE, the other layers frozen)."""
    from tfinfo.models.layer_by_layer import build_layer_stage

    x, y = _inputs(IB_BATCH * STEPS)
    model = build_layer_stage(
        _mlp(), "hidden", x, beta=0.2, noise_variance=0.5, critic_steps=2, x_critic="aa_mine", seed=0,
        optimizer=keras.optimizers.SGD(0.1), critic_optimizer=keras.optimizers.SGD(0.2, momentum=0.9),
        critic_warmup=0, jit_compile=jit_compile,
    )
    _start_score_biases_away_from_zero(model)
    return model, _dataset(x, y, IB_BATCH)


# -- surrogate bottlenecks (seed 004) -----------------------------------------------


def _surrogate(regularizer, jit_compile, **data):
    from tfinfo.models import SurrogateBottleneckModel

    x, y = _inputs(**data)
    model = SurrogateBottleneckModel(_mlp(noise=True), regularizer, layer="noisy", weight=0.3)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=_ce(), jit_compile=jit_compile)
    return model, _dataset(x, y)


def surrogate_activation_l2(jit_compile):
    from tfinfo.regularizers import ActivationL2Regularizer

    return _surrogate(ActivationL2Regularizer(), jit_compile)


def surrogate_log_variance(jit_compile):
    from tfinfo.regularizers import LogVarianceRegularizer

    return _surrogate(LogVarianceRegularizer(), jit_compile)


def surrogate_conditional_log_variance(jit_compile):
    from tfinfo.regularizers import ConditionalLogVarianceRegularizer

    # Four samples of each class per batch: a class variance from 2 samples is often tiny,
    # and its logarithm then depends on the float16 rounding of the latent.
    return _surrogate(ConditionalLogVarianceRegularizer(num_classes=CLASSES), jit_compile, balanced_classes=2)


# -- CTC (seed 002) ------------------------------------------------------------------

IMAGE_SHAPE = (8, 8, 1)


def _small_cnn():
    from tfinfo.architectures import build_classifier

    return build_classifier(
        "small", input_shape=IMAGE_SHAPE, num_classes=CLASSES, image_size=12, dropout=0.0, noise_stddev=0.0, seed=0
    )


def _images(n=BATCH * STEPS, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, size=(n,) + IMAGE_SHAPE).astype("float32"), rng.integers(0, CLASSES, n)


def _aggregation(classifier):
    from tfinfo.models import InformationAggregationModel

    n = BATCH * STEPS
    return InformationAggregationModel(
        classifier, num_examples=n, alpha=0.5, temperature=0.5, num_negatives=6, memory_momentum=0.5,
        embedding_dim=8, seed=0,
    )


# `shuffle=False`: under a distribution strategy Keras iterates the dataset once before
# the first epoch (to build the model), and a dataset reshuffled on every iteration then
# feeds the first epoch in another order than on one device.


def ctc_aggregation(jit_compile):
    """CTC stage 1: InfoNCE against a memory bank (negatives drawn), bank rows updated."""
    from tfinfo.data.indexed import indexed_dataset

    x, y = _images()
    model = _aggregation(_small_cnn())
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=_ce(), jit_compile=jit_compile)
    return model, indexed_dataset(x, y, batch_size=BATCH, seed=0, shuffle=False)


def ctc_revitalization(jit_compile):
    """CTC stage 2: in-batch InfoNCE against the frozen stage-1 bank."""
    from tfinfo.data.indexed import indexed_dataset
    from tfinfo.models import InformationRevitalizationModel

    x, y = _images()
    classifier = _small_cnn()
    model = InformationRevitalizationModel(classifier, _aggregation(classifier), beta=1.0, temperature=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=_ce(), jit_compile=jit_compile)
    return model, indexed_dataset(x, y, batch_size=BATCH, seed=0, shuffle=False)
