"""Drops TensorFlow's known harmless start-up lines from a CLI's stderr.

TensorFlow's C++ runtime prints a few lines on every CPU run that look like problems and
are not: the oneDNN notice ("... floating-point round-off errors ..."), and an
`E0000 ... oneDNN supports DT_BOOL only on platforms with AVX-512. Falling back to the
default Eigen-based implementation` logged at error level for a boolean op that simply
runs in Eigen, and under `--strategy mirrored` tf.data's "NodeDef mentions attribute
use_unbounded_threadpool ... Unknown attributes will be ignored". The first two are
written before absl logging is initialized, so `TF_CPP_MIN_LOG_LEVEL` does not silence
them, and switching oneDNN off
(`TF_ENABLE_ONEDNN_OPTS=0`) makes a training run about 1.6x slower here. A user cannot
tell them from real errors, so the CLIs drop exactly these lines (`KNOWN`) and pass
every other byte through. `TFINFO_RAW_STDERR=1` turns the filter off.

Installed by each CLI before TensorFlow is imported: file descriptor 2 becomes a pipe,
read line by line by a daemon thread that writes to the original stderr; at exit the
pipe is closed and drained.
"""

import atexit
import os
import re
import sys
import threading

RAW_ENV = "TFINFO_RAW_STDERR"

# One pattern per known line, each matched anywhere in the line.
KNOWN = tuple(re.compile(p) for p in (
    r"oneDNN custom operations are on\. You may see slightly different numerical results",
    r"oneDNN supports DT_BOOL only on platforms with AVX-512\. Falling back to the default Eigen",
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    # tf.data's distribution rewrite (mirrored runs) re-reads its own graph: "may be
    # expected ... Unknown attributes will be ignored".
    r"NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition",
))

_installed = False


def is_known(line):
    """Whether `line` (text, without its newline) is one of the dropped lines."""
    return any(pattern.search(line) for pattern in KNOWN)


def install():
    """Filters fd 2 of this process (idempotent; a no-op with `TFINFO_RAW_STDERR=1`)."""
    global _installed
    if _installed or os.environ.get(RAW_ENV, "") not in ("", "0"):
        return
    try:
        sys.stderr.flush()
        real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no usable fd 2 (e.g. closed): leave stderr as it is
        return
    _installed = True

    def pump():
        pending = b""
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                out = b"".join(line + b"\n" for line in lines
                               if not is_known(line.decode("utf-8", "replace")))
                if out:
                    os.write(real, out)
        if pending and not is_known(pending.decode("utf-8", "replace")):
            os.write(real, pending)

    thread = threading.Thread(target=pump, name="tfinfo-stderr-filter", daemon=True)
    thread.start()

    def close():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 2)  # the pipe's last write end goes: the pump reads to its end
        thread.join(timeout=5.0)

    atexit.register(close)
