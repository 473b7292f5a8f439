"""Every training model: one epoch on two mirrored CPUs equals one device on the global
batch; XLA equals graph mode; mixed precision keeps the statistics in float32.

Each case runs in a fresh process (`harness.run_case`): logical devices must be set
before any TensorFlow op. A new training model adds a case to `cases.py` and a line here.
"""

import pytest

from tests.distribute.harness import assert_low_precision_close
from tests.distribute.harness import assert_mirrored_matches_single
from tests.distribute.harness import assert_same_epoch
from tests.distribute.harness import run_case

MODES = ["single", "mirrored", "xla", "mixed_float16"]

# case -> logs compared under mixed precision (to 5e-2 relative)
CASES = {
    "tests.distribute.cases:standard": ["loss"],
    "tests.distribute.cases:mmd": ["ce", "mmd"],
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    return request.param, run_case(request.param, MODES, tmp_path_factory.mktemp("case"))


def test_mirrored_equals_one_device(case):
    _, result = case
    assert_mirrored_matches_single(result)


def test_xla_equals_graph_mode(case):
    _, result = case
    assert_same_epoch(result, "xla", rtol=1e-4)


def test_mixed_float16_keeps_statistics_in_float32(case):
    spec, result = case
    assert_low_precision_close(result, "mixed_float16", rtol=5e-2, logs=CASES[spec])
