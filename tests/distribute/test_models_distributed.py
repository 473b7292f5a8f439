"""Every training model: one epoch on two mirrored CPUs equals one device on the global
batch; XLA equals graph mode; mixed precision keeps the statistics in float32.

Each case runs in a fresh process (`harness.run_case`): logical devices must be set
before any TensorFlow op. A new training model adds a case to `cases.py` and a line here.

Time (2 CPU cores): 14-27 s per case for all its modes, about 2.5 min for the default
cases; `lautum_exact` and `mi_all_pairs` are behind the `slow` marker.
"""

import pytest

from tests.distribute.harness import assert_low_precision_close
from tests.distribute.harness import assert_mirrored_matches_single
from tests.distribute.harness import assert_same_epoch
from tests.distribute.harness import assert_same_optimizer_state
from tests.distribute.harness import run_case

# Every case trains in fresh processes (logical devices are set before any op).
pytestmark = pytest.mark.integration

MODES = ["single", "mirrored", "xla", "mixed_float16"]

# case -> logs compared under mixed precision (to 5e-2 relative)
CASES = {
    "tests.distribute.cases:standard": ["loss"],
    "tests.distribute.cases:mmd": ["ce", "mmd"],
    "tests.distribute.cases:lautum": ["ce", "lautum"],
    # Fast mode's value is a first-order expansion around the last refresh: only the CE.
    "tests.distribute.cases:lautum_exact": ["ce"],
    "tests.distribute.cases:mi_smile": ["ce", "mi", "critic_loss"],
    "tests.distribute.cases:mi_mine": ["ce", "mi", "critic_loss"],
    "tests.distribute.cases:mi_all_pairs": ["ce", "mi", "critic_loss"],
    "tests.distribute.cases:lautum_mi": ["ce", "mi", "lautum"],
    "tests.distribute.cases:temporal_ensembling": ["ce", "consistency"],
}

# case -> logs compared under mixed_bfloat16 (to 5e-2 relative), an extra mode of the run
BFLOAT16_CASES = {
    "tests.distribute.cases:lautum": ["ce", "lautum"],
    "tests.distribute.cases:mi_smile": ["ce", "mi", "critic_loss"],
}


# Further variants of a model (about 20 s each): behind the `slow` marker.
SLOW_CASES = {"tests.distribute.cases:lautum_exact", "tests.distribute.cases:mi_all_pairs"}


@pytest.fixture(
    scope="module",
    params=[pytest.param(spec, marks=pytest.mark.slow) if spec in SLOW_CASES else spec for spec in sorted(CASES)],
)
def case(request, tmp_path_factory):
    modes = MODES + (["mixed_bfloat16"] if request.param in BFLOAT16_CASES else [])
    return request.param, run_case(request.param, modes, tmp_path_factory.mktemp("case"))


def test_mirrored_equals_one_device(case):
    _, result = case
    assert_mirrored_matches_single(result)
    # The optimizers' slots too (the critic's Adam moments): the same global gradients.
    assert_same_optimizer_state(result, "mirrored")


def test_xla_equals_graph_mode(case):
    _, result = case
    assert_same_epoch(result, "xla", rtol=1e-4)
    assert_same_optimizer_state(result, "xla", rtol=1e-4)


def test_mixed_float16_keeps_statistics_in_float32(case):
    spec, result = case
    assert_low_precision_close(result, "mixed_float16", rtol=5e-2, logs=CASES[spec])


def test_mixed_bfloat16_keeps_statistics_in_float32(case):
    spec, result = case
    if spec not in BFLOAT16_CASES:
        pytest.skip("mixed_bfloat16 is run for the Lautum and MI cases only")
    assert_low_precision_close(result, "mixed_bfloat16", rtol=5e-2, logs=BFLOAT16_CASES[spec])
