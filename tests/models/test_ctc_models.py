import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.architectures import build_classifier
from tfinfo.data.indexed import indexed_dataset
from tfinfo.information import infonce_bound
from tfinfo.models.information_aggregation_model import InformationAggregationModel
from tfinfo.models.information_revitalization_model import InformationRevitalizationModel

SHAPE = (12, 12, 1)


def _data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    # The class is the brighter quadrant, learnable in a few epochs.
    y = rng.integers(0, 4, size=n).astype(np.int32)
    x = rng.uniform(0, 120, size=(n,) + SHAPE).astype(np.float32)
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, 6 * r : 6 * r + 6, 6 * c : 6 * c + 6] += 120.0
    return x, y


def _classifier(**kwargs):
    return build_classifier("small", input_shape=SHAPE, num_classes=4, image_size=12, seed=0, **kwargs)


def _unit_rows(rng, n, d):
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _normalize(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _logsumexp(v):
    m = np.max(v)
    return m + np.log(np.sum(np.exp(v - m)))


def _snapshot(variables):
    return [v.numpy().copy() for v in variables]


# -- the pipeline -------------------------------------------------------------------
def test_indexed_dataset_yields_each_row_with_its_index_and_reshuffles_every_epoch():
    x, y = _data(n=10)
    ds = indexed_dataset(x, y, batch_size=4, seed=3)
    epochs = []
    for _ in range(2):
        order = []
        sizes = []
        for (xb, ib), yb in ds:
            assert xb.dtype == tf.float32 and ib.dtype == tf.int32 and yb.dtype == tf.int32
            np.testing.assert_array_equal(xb.numpy(), x[ib.numpy()])
            np.testing.assert_array_equal(yb.numpy(), y[ib.numpy()])
            order += list(ib.numpy())
            sizes.append(len(ib))
        assert sizes == [4, 4, 2]  # the partial last batch is kept
        assert sorted(order) == list(range(10))
        epochs.append(order)
    assert epochs[0] != epochs[1]
    assert epochs[0] != list(range(10))
    again = [int(i) for (_, ib), _ in indexed_dataset(x, y, batch_size=4, seed=3) for i in ib]
    assert again == epochs[0]  # seeded
    in_order = [int(i) for (_, ib), _ in indexed_dataset(x, y, batch_size=4, shuffle=False) for i in ib]
    assert in_order == list(range(10))


def test_indexed_dataset_rejects_bad_arguments_by_name():
    x, y = _data(n=10)
    with pytest.raises(ValueError, match="batch_size"):
        indexed_dataset(x, y, batch_size=0)
    with pytest.raises(ValueError, match="seed"):
        indexed_dataset(x, y, batch_size=4, seed=1.5)
    with pytest.raises(ValueError, match="y.shape"):
        indexed_dataset(x, y[:9], batch_size=4)
    with pytest.raises(ValueError, match="integer labels"):
        indexed_dataset(x, y + 0.5, batch_size=4)
    with pytest.raises(ValueError, match="labels >= 0"):
        indexed_dataset(x, y - 5, batch_size=4)
    with pytest.raises(ValueError, match="x.shape"):
        indexed_dataset(x[:0], y[:0], batch_size=4)
    with pytest.raises(ValueError, match="x.dtype"):
        indexed_dataset(np.array([["a"]] * 10), y, batch_size=4)


# -- the losses against float64 references --------------------------------------------
def test_aggregation_loss_matches_a_float64_reference_with_sampled_and_full_negatives():
    rng = np.random.default_rng(1)
    n, d, temperature = 10, 6, 0.5
    bank = _unit_rows(rng, n, d)
    t = rng.standard_normal((4, d))  # unnormalized on purpose: the loss normalizes
    indices = np.array([3, 7, 0, 9])
    negatives = np.array([1, 3, 3, 8, 0])  # rows 0 and 2 find their own index: masked

    def reference(candidates):
        losses = []
        for ti, i in zip(_normalize(t), indices):
            positive = ti @ bank[i] / temperature
            others = [ti @ bank[k] / temperature for k in candidates(i)]
            losses.append(_logsumexp(np.array([positive] + others)) - positive)
        return np.mean(losses)

    model = InformationAggregationModel(
        _classifier(), num_examples=n, temperature=temperature, num_negatives=5, embedding_dim=d, seed=0
    )
    model.memory_bank.assign(bank.astype(np.float32))
    sampled = model.aggregation_loss(tf.constant(t, tf.float32), indices, negatives)
    np.testing.assert_allclose(float(sampled), reference(lambda i: [k for k in negatives if k != i]), rtol=1e-5)

    full = InformationAggregationModel(
        _classifier(), num_examples=n, temperature=temperature, num_negatives=None, embedding_dim=d
    )
    full.memory_bank.assign(bank.astype(np.float32))
    value = full.aggregation_loss(tf.constant(t, tf.float32), indices)
    np.testing.assert_allclose(float(value), reference(lambda i: [k for k in range(n) if k != i]), rtol=1e-5)

    # Negative draws: uniform indices in range, seeded.
    draws = model.sample_negatives().numpy()
    assert draws.shape == (5,) and draws.dtype == np.int32 and draws.min() >= 0 and draws.max() < n
    twin = InformationAggregationModel(_classifier(), num_examples=n, num_negatives=5, embedding_dim=d, seed=0)
    np.testing.assert_array_equal(twin.sample_negatives().numpy(), draws)


def test_revitalization_loss_matches_a_float64_reference_and_stops_the_bank_gradient():
    rng = np.random.default_rng(2)
    b, d, temperature = 5, 8, 0.2
    t_2, t_1 = rng.standard_normal((b, d)), rng.standard_normal((b, d))
    scores = _normalize(t_2) @ _normalize(t_1).T / temperature
    expected = np.mean([_logsumexp(scores[i]) - scores[i, i] for i in range(b)])
    classifier = _classifier()
    model = InformationRevitalizationModel(
        classifier, InformationAggregationModel(classifier, num_examples=4), temperature=temperature
    )
    a, c = tf.constant(t_2, tf.float32), tf.constant(t_1, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([a, c])
        value = model.revitalization_loss(a, c)
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    # The library's InfoNCE bound on the same scores: L_IRS = log B - bound.
    bound = float(infonce_bound(tf.constant(scores, tf.float32)).value)
    np.testing.assert_allclose(np.log(b) - bound, expected, rtol=1e-5)
    assert tape.gradient(value, c) is None
    assert np.all(np.isfinite(tape.gradient(value, a).numpy()))


# -- stage 1 ---------------------------------------------------------------------------
def test_memory_bank_moves_only_the_batch_rows_toward_the_step_representations():
    x, y = _data()
    # No dropout or noise: the training-mode forward pass is reproducible outside the step.
    model = InformationAggregationModel(
        _classifier(dropout=0.0, noise_stddev=0.0), num_examples=len(x), num_negatives=8, memory_momentum=0.3, seed=0
    )
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    bank = _unit_rows(np.random.default_rng(3), len(x), 128)
    model.memory_bank.assign(bank.astype(np.float32))
    (xb, ib), yb = next(iter(indexed_dataset(x, y, batch_size=8, seed=5)))
    ib = ib.numpy()
    assert list(ib) != sorted(ib)  # shuffled, not a contiguous block
    t = model.representation(xb, training=True).numpy().astype(np.float64)

    model.train_on_batch((xb, ib), yb)

    after = model.memory_bank.numpy()
    expected = _normalize(0.3 * bank[ib] + 0.7 * t)
    np.testing.assert_allclose(after[ib], expected, atol=2e-6)
    others = np.setdiff1d(np.arange(len(x)), ib)
    np.testing.assert_array_equal(after[others], bank[others].astype(np.float32))
    # The bank took the representations of the step's forward pass, not the updated net's.
    t_after = model.representation(xb, training=True).numpy()
    assert np.abs(t_after - t).max() > 1e-3


def test_stage_1_fit_logs_ce_ias_and_their_combination_and_visits_every_row():
    x, y = _data()
    model = InformationAggregationModel(_classifier(), num_examples=len(x), alpha=0.5, num_negatives=16, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    initial = model.memory_bank.numpy().copy()
    history = model.fit(indexed_dataset(x, y, batch_size=8, seed=0), epochs=2, verbose=0).history
    for key in ("loss", "ce", "ias", "accuracy"):
        assert len(history[key]) == 2 and np.all(np.isfinite(history[key])), key
    np.testing.assert_allclose(
        history["loss"], np.array(history["ce"]) + 0.5 * np.array(history["ias"]), rtol=1e-5, atol=1e-6
    )
    bank = model.memory_bank.numpy()
    assert np.all(np.any(bank != initial, axis=1))  # 4 batches (the last partial) cover all 30
    np.testing.assert_allclose(np.linalg.norm(bank, axis=1), 1.0, atol=1e-5)
    # evaluate accepts the indexed batches and reports the classifier's CE.
    result = model.evaluate(indexed_dataset(x, y, batch_size=8, shuffle=False), verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(result["ce"]) and np.isfinite(result["ce"])


def test_compile_builds_the_optimizer_and_a_training_pair_calls_the_classifier():
    x, y = _data(n=8)
    classifier = _classifier()
    stage_1 = InformationAggregationModel(classifier, num_examples=len(x), embedding_dim=8, seed=0)
    stage_2 = InformationRevitalizationModel(classifier, information_bank=stage_1)
    for model in (stage_1, stage_2):
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        # Built on what the step trains (classifier and head), before the step is traced.
        trained = classifier.trainable_variables + model.projection_head.trainable_variables
        assert model.optimizer.built and len(model.optimizer.variables) == 2 + len(trained)
        # Keras calls the model on the `x` of a training batch, `(images, index)`, under a strategy.
        np.testing.assert_array_equal(model((x, np.arange(8)), training=False).numpy(), classifier(x).numpy())


def test_stage_1_keras_round_trip_restores_the_bank_and_the_config(tmp_path):
    x, y = _data()
    model = InformationAggregationModel(
        _classifier(), num_examples=len(x), alpha=0.2, temperature=0.1, num_negatives=7, memory_momentum=0.6,
        embedding_dim=16, seed=4,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    (xb, ib), yb = next(iter(indexed_dataset(x, y, batch_size=8, seed=0)))
    model.train_step(((xb, ib), yb))  # eager: moves the bank and the optimizer off their initial state
    path = tmp_path / "stage1.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, InformationAggregationModel)
    for key in ("num_examples", "alpha", "temperature", "num_negatives", "memory_momentum", "embedding_dim", "seed"):
        assert getattr(loaded, key) == getattr(model, key), key
    np.testing.assert_array_equal(loaded.memory_bank.numpy(), model.memory_bank.numpy())
    for a, b in zip(loaded.projection_head.weights, model.projection_head.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(loaded(x[:5]).numpy(), model(x[:5]).numpy())
    np.testing.assert_array_equal(loaded.representation(x[:5]).numpy(), model.representation(x[:5]).numpy())


# -- stage 2 ---------------------------------------------------------------------------
def test_stage_2_trains_the_classifier_and_never_the_information_bank():
    x, y = _data()
    classifier = _classifier()
    stage_1 = InformationAggregationModel(classifier, num_examples=len(x), seed=0)
    t_1 = stage_1.representation(x).numpy()
    num_trainable = len(classifier.trainable_variables)
    # The classifier keeps training in stage 2, as in CTC; the bank is a copy.
    model = InformationRevitalizationModel(classifier, information_bank=stage_1, beta=0.7)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    bank = model.information_bank
    assert not bank.trainable and not bank.trainable_weights
    assert len(classifier.trainable_variables) == num_trainable  # freezing the bank froze none of these
    np.testing.assert_allclose(bank(x, training=False).numpy(), t_1, atol=1e-6)
    trainable = classifier.trainable_variables + model.projection_head.trainable_variables
    assert {id(v) for v in model.trainable_variables} == {id(v) for v in trainable}
    bank_before, classifier_before = _snapshot(bank.weights), _snapshot(classifier.trainable_variables)
    head_1 = _snapshot(stage_1.projection_head.weights)

    history = model.fit(
        tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=2, verbose=0
    ).history
    for key in ("loss", "ce", "irs", "accuracy"):
        assert len(history[key]) == 2 and np.all(np.isfinite(history[key])), key
    np.testing.assert_allclose(
        history["loss"], np.array(history["ce"]) + 0.7 * np.array(history["irs"]), rtol=1e-5, atol=1e-6
    )
    for before, v in zip(bank_before, bank.weights):
        np.testing.assert_array_equal(v.numpy(), before, err_msg=v.path)
    for before, v in zip(classifier_before, classifier.trainable_variables):
        assert not np.array_equal(v.numpy(), before), v.path
    for before, v in zip(head_1, stage_1.projection_head.weights):
        np.testing.assert_array_equal(v.numpy(), before)  # stage 2 trains a copy of the head
    np.testing.assert_allclose(bank(x, training=False).numpy(), t_1, atol=1e-6)
    # Adam holds two slots per trained variable, plus iterations and learning rate: none for the bank.
    assert len(model.optimizer.variables) == 2 * len(trainable) + 2
    # Indexed batches are accepted too (the index is ignored).
    (xb, ib), yb = next(iter(indexed_dataset(x, y, batch_size=8, seed=0)))
    logs = model.train_step(((xb, ib), yb))
    assert np.isfinite(float(logs["irs"]))


def test_stage_2_keras_round_trip_restores_the_frozen_bank_and_the_head(tmp_path):
    x, y = _data()
    classifier = _classifier()
    model = InformationRevitalizationModel(
        classifier, InformationAggregationModel(classifier, num_examples=len(x), seed=0), beta=0.3, temperature=0.2
    )
    # Move every weight off its seeded initial value so that restoring is visible.
    rng = np.random.default_rng(0)
    for v in model.information_bank.weights + model.projection_head.weights + classifier.weights:
        v.assign(v.numpy() + rng.normal(0, 0.01, v.shape).astype(np.float32))
    path = tmp_path / "stage2.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, InformationRevitalizationModel)
    assert loaded.beta == 0.3 and loaded.temperature == 0.2 and not loaded.information_bank.trainable
    for part in ("information_bank", "projection_head", "classifier"):
        for a, b in zip(getattr(loaded, part).weights, getattr(model, part).weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{part}: {b.path}")
    np.testing.assert_array_equal(
        loaded.information_bank(x[:5], training=False).numpy(), model.information_bank(x[:5], training=False).numpy()
    )
    np.testing.assert_array_equal(loaded(x[:5]).numpy(), model(x[:5]).numpy())


# -- arguments --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_examples": 0}, "num_examples"),
        ({"alpha": -0.1}, "alpha"),
        ({"temperature": 0.0}, "temperature"),
        ({"num_negatives": 0}, "num_negatives"),
        ({"memory_momentum": 1.0}, "memory_momentum"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"feature_layer": "nope"}, "feature_layer"),
        ({"seed": "zero"}, "seed"),
    ],
)
def test_stage_1_bad_arguments_name_themselves(kwargs, name):
    kwargs = {"num_examples": 10, **kwargs}
    with pytest.raises(ValueError, match=name):
        InformationAggregationModel(_classifier(), **kwargs)


def test_stage_1_rejects_unindexed_batches_and_out_of_range_indices():
    x, y = _data(n=8)
    model = InformationAggregationModel(_classifier(), num_examples=8, num_negatives=4)
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="index"):
        model.train_step((tf.constant(x), tf.constant(y)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_examples"):
        model.train_step(((tf.constant(x), tf.range(1, 9)), tf.constant(y)))


def test_stage_2_bad_arguments_name_themselves():
    classifier = _classifier()
    stage_1 = InformationAggregationModel(classifier, num_examples=10)
    with pytest.raises(ValueError, match="beta"):
        InformationRevitalizationModel(classifier, stage_1, beta=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        InformationRevitalizationModel(classifier, stage_1, temperature=0.0)
    # NaN compares false with every bound, so a range check alone would let it through.
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"Expected `beta` to be a finite number in \[0.0, inf\)\. Received: beta="):
            InformationRevitalizationModel(classifier, stage_1, beta=bad)
        with pytest.raises(ValueError, match=r"Expected `alpha` to be a finite number"):
            InformationAggregationModel(classifier, num_examples=10, alpha=bad)
    with pytest.raises(ValueError, match="information_bank"):
        InformationRevitalizationModel(classifier, information_bank="stage_1")
    with pytest.raises(ValueError, match="projection_head"):
        InformationRevitalizationModel(classifier, stage_1, projection_head="dense")
    with pytest.raises(ValueError, match="feature_layer"):
        InformationRevitalizationModel(classifier, stage_1, feature_layer="nope")
    # A bank made of the classifier's own layers would train with it.
    shared = keras.Model(classifier.inputs[0], classifier.get_layer("features").output)
    with pytest.raises(ValueError, match="share no variable"):
        InformationRevitalizationModel(classifier, shared)
    bank = stage_1.build_information_bank()
    with pytest.raises(ValueError, match="information_bank.output_shape"):
        InformationRevitalizationModel(classifier, bank, projection_head=keras.layers.Dense(5))
    other = InformationAggregationModel(
        build_classifier("small", input_shape=(16, 16, 1), num_classes=4, image_size=12, seed=0), num_examples=10
    )
    with pytest.raises(ValueError, match="information_bank.input_shape"):
        InformationRevitalizationModel(classifier, other)
