import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.callbacks.non_finite_guard import NonFiniteGuard
from tfinfo.callbacks.non_finite_guard import NonFiniteTermError

BAD_STEP = 3  # 0-based step of the first epoch whose batch makes the penalty NaN
POISON = 999.0


class Penalized(keras.Model):
    """CE + 0.1 * ||W||^2, whose penalty (logged as `lautum`) is NaN on a batch holding POISON."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed=0))
        self.steps = self.add_weight(shape=(), initializer="zeros", trainable=False, name="steps")
        self.trackers = [keras.metrics.Mean(name=n) for n in ("loss", "ce", "lautum")]

    def call(self, x):
        return self.dense(x)

    @property
    def metrics(self):
        return self.trackers

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            poisoned = tf.reduce_any(tf.equal(x, POISON))
            logits = self(tf.where(tf.equal(x, POISON), 0.0, x))
            ce = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            penalty = tf.reduce_sum(tf.square(self.dense.kernel))
            penalty = tf.where(poisoned, np.nan, penalty)
            loss = ce + 0.1 * penalty
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        self.steps.assign_add(1.0)
        for tracker, value in zip(self.trackers, (loss, ce, penalty)):
            tracker.update_state(value)
        return {t.name: t.result() for t in self.trackers}


def _data(n=48, batch=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    x[BAD_STEP * batch + 2, 1] = POISON
    y = rng.integers(0, 3, size=n).astype("int32")
    return x, y, batch


def _fit(model, x, y, batch, callbacks, epochs=2):
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model(x[:1])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    return model.fit(ds, epochs=epochs, verbose=0, callbacks=callbacks)


def test_stop_names_the_term_the_step_and_the_cause():
    x, y, batch = _data()
    guard = NonFiniteGuard("stop")
    with pytest.raises(NonFiniteTermError) as info:
        _fit(Penalized(), x, y, batch, [guard])
    message = str(info.value)
    assert "Expected finite loss terms" in message and "Received: non-finite lautum" in message
    assert f"at step {BAD_STEP + 1} (epoch 0, batch {BAD_STEP})" in message
    assert "lautum_weight" in message  # the likely cause and its remedy
    assert "ce" not in message.split("Received: non-finite ")[1].split(" at step")[0]


def test_skip_undoes_exactly_the_bad_step_and_counts_it():
    x, y, batch = _data()
    guard = NonFiniteGuard("skip")
    model = Penalized()
    history = _fit(model, x, y, batch, [guard])
    steps = len(x) // batch
    assert guard.skipped_steps == 2 and guard.skipped_terms == {"lautum": 2, "loss": 2}  # once per epoch
    assert [(e["epoch"], e["batch"], e["step"]) for e in guard.events] == [
        (0, BAD_STEP, BAD_STEP + 1), (1, BAD_STEP, steps + BAD_STEP + 1)]
    assert all(np.isfinite(v).all() for v in history.history.values())
    assert not any(k.startswith("nonfinite_") for k in history.history)
    assert history.history["skipped_steps"] == [1.0, 1.0]
    # The same SGD without the bad batch: a skipped step leaves no trace at all (the
    # step counter and the trackers included).
    keep = np.ones(len(x), bool)
    keep[BAD_STEP * batch:(BAD_STEP + 1) * batch] = False
    reference = Penalized()
    _fit(reference, x[keep], y[keep], batch, [])
    np.testing.assert_allclose(model.dense.kernel.numpy(), reference.dense.kernel.numpy(), rtol=1e-6, atol=1e-7)
    assert int(model.steps.numpy()) == int(reference.steps.numpy()) == 2 * (steps - 1)
    np.testing.assert_allclose(history.history["ce"][-1], reference.history.history["ce"][-1], rtol=1e-6)


def test_skip_stops_after_max_skipped():
    x, y, batch = _data()
    model = Penalized()
    with pytest.raises(NonFiniteTermError, match="non-finite lautum"):
        _fit(model, x, y, batch, [NonFiniteGuard("skip", max_skipped=0)])


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match=r"Expected policy to be one of \('stop', 'skip'\). Received: policy='ignore'"):
        NonFiniteGuard("ignore")
