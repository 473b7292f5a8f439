"""Runs many invocations of one CLI in one fresh process.

Each CLI parses absl flags and calls its `main`, exactly as its console script does, but
TensorFlow is imported once for all the cases, and the CLI's flags stay away from the
other trainers' flags (transfer, tune, compare and ib share flag names, so two of them
cannot be imported into one test process).

A case is a dict: `id`, `argv` (the flags), and optionally `workdir` (its files are listed
afterwards), `mock_tfds` (run under `tfds.testing.mock_data`) and `full_disk` (every
`numpy.savez` fails with ENOSPC). Each result holds `code` (the exit code `app.run` would
give: `main`'s return, a `SystemExit`'s code, or 1 with the traceback in `stderr`),
`stdout`, `stderr` (with the `tfinfo` logger's records), `seconds` and `files`.
"""

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}

_DRIVER = textwrap.dedent("""
    import contextlib, errno, importlib, io, json, logging, os, sys, time, traceback
    from unittest import mock

    module_name, prog, cases_file, results_file = sys.argv[1:5]
    cli = importlib.import_module(module_name)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def parse(argv):
        cli.FLAGS.unparse_flags()
        if hasattr(cli, "_parse_flags"):  # exits 2 with Expected/Received on a bad flag
            return cli._parse_flags(argv)
        return cli.FLAGS(argv)

    results = {}
    for case in json.load(open(cases_file)):
        out, err = io.StringIO(), io.StringIO()
        handler = logging.StreamHandler(err)
        logging.getLogger("tfinfo").addHandler(handler)
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \\
                    contextlib.ExitStack() as stack:
                if case.get("full_disk"):
                    stack.enter_context(mock.patch("numpy.savez", full_disk))
                if case.get("mock_tfds"):
                    import tensorflow_datasets as tfds
                    stack.enter_context(tfds.testing.mock_data(num_examples=60))
                parse([prog, *case["argv"]])
                code = cli.main([prog])
        except SystemExit as exit:
            code = exit.code
        except BaseException:  # what app.run would turn into exit code 1 and a traceback
            code, err = 1, io.StringIO(err.getvalue() + traceback.format_exc())
        logging.getLogger("tfinfo").removeHandler(handler)
        files = None
        workdir = case.get("workdir")
        if workdir and os.path.isdir(workdir):
            files = sorted(os.path.relpath(os.path.join(d, n), workdir)
                           for d, _, names in os.walk(workdir) for n in names)
        results[case["id"]] = {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
                               "seconds": time.perf_counter() - start, "files": files}
    json.dump(results, open(results_file, "w"))
""")


def run_cases(module, prog, cases, folder, timeout=900):
    """Runs `cases` (see the module docstring) through `module`'s CLI named `prog` in one
    new process with `folder` as working directory; returns {case id: result}."""
    folder = str(folder)
    cases_file = os.path.join(folder, "cli_cases.json")
    results_file = os.path.join(folder, "cli_results.json")
    with open(cases_file, "w") as f:
        json.dump(cases, f)
    proc = subprocess.run([sys.executable, "-c", _DRIVER, module, prog, cases_file, results_file],
                          cwd=folder, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(results_file) as f:
        return json.load(f)
