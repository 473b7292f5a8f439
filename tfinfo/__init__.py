"""tfinfo: information-theoretic regularization for TensorFlow/Keras.

Importing tfinfo needs TensorFlow. Install it with the extra that fits the machine:
`pip install "tfinfo[cpu]"` (CPU wheel) or `pip install "tfinfo[gpu]"` (CUDA build).
"""

__version__ = "0.1.0"

try:
    import tensorflow as _tf  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "tfinfo needs TensorFlow, which is not installed. Install it with the extra that "
        'fits your machine: pip install "tfinfo[cpu]" on CPU-only machines, or '
        'pip install "tfinfo[gpu]" for the CUDA build on GPU machines. '
        f"(Original error: {error})"
    ) from error

from tfinfo import architectures  # noqa: E402
from tfinfo import callbacks  # noqa: E402
from tfinfo import critics  # noqa: E402
from tfinfo import information  # noqa: E402
from tfinfo import layers  # noqa: E402
from tfinfo import models  # noqa: E402
from tfinfo import penalties  # noqa: E402
from tfinfo import regularizers  # noqa: E402

__all__ = ["architectures", "callbacks", "critics", "information", "layers", "models", "penalties", "regularizers"]
