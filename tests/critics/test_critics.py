"""Critic networks: all-pairs scores agree with pairwise calls; configs round-trip; marginals."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfinfo.critics import CRITIC_PRESETS
from tfinfo.critics import ConcatCritic
from tfinfo.critics import SeparableCritic
from tfinfo.critics import critic_scores


def _data(n=6, image=True):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4, 4, 1) if image else (n, 5)).astype("float32")
    z = rng.normal(size=(n, 3)).astype("float32")
    return tf.constant(x), tf.constant(z)


@pytest.mark.parametrize("critic", [ConcatCritic((16, 8)), SeparableCritic((16,), embedding_dim=4)])
def test_score_matrix_entries_equal_pairwise_calls(critic):
    x, z = _data()
    matrix = critic.score_matrix(x, z).numpy()
    assert matrix.shape == (6, 6)
    np.testing.assert_allclose(np.diag(matrix), critic((x, z)).numpy(), rtol=1e-5, atol=1e-6)
    for i, j in [(0, 5), (3, 1), (4, 2)]:
        single = critic((x[i : i + 1], z[j : j + 1])).numpy()[0]
        assert matrix[i, j] == pytest.approx(single, rel=1e-5, abs=1e-6)


def test_concat_critic_is_an_mlp_on_the_concatenation():
    critic = ConcatCritic((7,), activation="relu")
    x, z = _data(image=False)
    out = critic((x, z)).numpy()
    w1, b1 = critic.hidden_layers[0].kernel.numpy(), critic.hidden_layers[0].bias.numpy()
    w2, b2 = critic.output_layer.kernel.numpy(), critic.output_layer.bias.numpy()
    joint = np.concatenate([x.numpy(), z.numpy()], axis=1).astype(np.float64)
    expected = (np.maximum(joint @ w1 + b1, 0.0) @ w2 + b2)[:, 0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_presets_follow_the_seeds():
    assert CRITIC_PRESETS["seed003"]["hidden_units"] == (1500, 1500)
    assert CRITIC_PRESETS["seed002"]["hidden_units"] == (1024,) * 4
    critic = ConcatCritic("seed003")
    assert critic.hidden_units == (1500, 1500)
    assert "leaky_relu" in str(critic.activation)


@pytest.mark.parametrize("critic", [ConcatCritic((16, 8), activation="leaky_relu"), SeparableCritic((8, 8), 4)])
def test_config_round_trip_and_weights_reload(critic, tmp_path):
    x, z = _data()
    critic((x, z))
    clone = critic.__class__.from_config(critic.get_config())
    assert clone.get_config() == critic.get_config()
    inputs = (keras.Input((4, 4, 1)), keras.Input((3,)))
    model = keras.Model(inputs, critic(inputs))
    path = tmp_path / "critic.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded((x, z)).numpy(), critic((x, z)).numpy(), rtol=1e-6)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="hidden_units"):
        ConcatCritic("huge")
    with pytest.raises(ValueError, match="hidden_units"):
        ConcatCritic((0,))
    with pytest.raises(ValueError, match="embedding_dim"):
        SeparableCritic(embedding_dim=0)
    with pytest.raises(ValueError, match="marginal"):
        critic_scores(ConcatCritic((4,)), *_data(), marginal="pairs")


class _IndexCritic(keras.layers.Layer):
    """Scores a pair by which samples it joins: 1000 * i_x + i_z (inputs hold indices)."""

    def call(self, inputs):
        x, z = inputs
        return 1000.0 * x[:, 0] + z[:, 0]

    def score_matrix(self, x, z):
        return 1000.0 * x[:, 0][:, None] + z[:, 0][None, :]


@pytest.mark.parametrize("marginal", ["shuffle", "all_pairs"])
def test_marginal_pairs_never_join_aligned_samples(marginal):
    n = 9
    idx = tf.range(n, dtype=tf.float32)[:, None]
    generator = keras.random.SeedGenerator(3)
    seen = set()
    for _ in range(5):
        scores = critic_scores(_IndexCritic(), idx, idx, marginal=marginal, seed=generator)
        np.testing.assert_array_equal(scores.joint.numpy(), 1001.0 * np.arange(n))
        pairs = {(int(s) // 1000, int(s) % 1000) for s in scores.marginal.numpy()}
        assert all(i != j for i, j in pairs)
        seen |= pairs
        if marginal == "all_pairs":
            assert len(pairs) == n * (n - 1)
            assert scores.matrix.shape == (n, n)
        else:
            assert len(pairs) == n and scores.matrix is None
            # each x and each z appears exactly once: a product-of-marginals sample
            assert sorted(i for i, _ in pairs) == list(range(n))
            assert sorted(j for _, j in pairs) == list(range(n))
    if marginal == "shuffle":
        assert len(seen) > n  # fresh permutations from the generator


def test_random_permutations_are_the_same_under_xla_and_advance_the_generator():
    from tfinfo.critics.marginals import random_bits
    from tfinfo.critics.marginals import random_permutation

    def draws(jit_compile):
        generator = keras.random.SeedGenerator(5)
        step = tf.function(lambda: random_permutation(tf.constant(16), generator), jit_compile=jit_compile)
        return [step().numpy() for _ in range(3)]

    graph, xla = draws(False), draws(True)
    for a, b in zip(graph, xla):
        np.testing.assert_array_equal(a, b)
        assert sorted(a) == list(range(16))
    assert not np.array_equal(graph[0], graph[1])  # each draw advances the generator
    # Distinct bits for distinct indices, about uniform; every position equally likely.
    bits = random_bits(100_000, tf.constant([3, 4])).numpy().astype(np.float64)
    assert len(np.unique(bits)) == len(bits)
    assert bits.mean() / 2**32 == pytest.approx(0.5, abs=0.005)
    first = np.array([np.argmax(random_permutation(4, tf.constant([s, 0])).numpy() == 0) for s in range(2000)])
    counts = np.bincount(first, minlength=4)
    assert np.all(np.abs(counts - 500) < 4 * np.sqrt(2000 * 0.25 * 0.75))


def test_concat_critic_under_mixed_precision_mixes_float32_inputs_and_half_features():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        critic = ConcatCritic((8,))
        x = tf.random.normal((5, 6))
        z = tf.cast(tf.random.normal((5, 3)), tf.float16)
        scores = critic((x, z))
        matrix = critic.score_matrix(x, z)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert scores.dtype == tf.float16 and scores.shape == (5,)
    np.testing.assert_allclose(np.diag(matrix.numpy().astype(np.float32)), scores.numpy(), rtol=1e-2, atol=1e-2)
