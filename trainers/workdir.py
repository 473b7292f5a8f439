"""The workdir of a `tfinfo-transfer` run: checked before anything is written, locked
while a process trains in it, and written through temporary files that a failure removes.

- `check_writable` refuses a workdir that is a file, lies under a file, or cannot be
  created or written (a read-only folder or parent), without creating anything.
- `check_run` reads `run.json` (the identity of the run the workdir holds) and refuses
  another configuration, a workdir of an earlier run without `run.json`, and a
  `run.json` or `results.json` that is not a JSON object (e.g. truncated by a full disk).
- `WorkdirLock` holds `WORKDIR/run.lock` (the owner's pid and host) while a run trains:
  a second run in the same workdir is refused while the owner is alive; the lock of a
  process that is no longer running is taken over with a warning; it is released when
  the run ends, also on an error.
- `write_json` and `writing_folder` write under a temporary name and rename; an `OSError`
  (a full disk, a permission) removes the temporary file and becomes a `WorkdirError`
  naming the path.

Nothing here imports TensorFlow.
"""

import contextlib
import errno
import json
import logging
import os
import shutil
import socket

from trainers.config import NON_IDENTITY_FIELDS
from trainers.config import read_json_object

log = logging.getLogger("tfinfo")

LOCK_FILE = "run.lock"
RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
# What a run writes besides run.json: a workdir holding any of these without run.json is
# an earlier run's, never read or overwritten.
RUN_OUTPUTS = ("results.json", "classifier.keras", "export", "stage1", "checkpoints")


class WorkdirError(ValueError):
    """A workdir that cannot be used or written (a bad input: exit code 2)."""


def write_error(path, error):
    """The `WorkdirError` of an `OSError` raised while writing `path`."""
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        expected = f"free space on the device to write {path}"
    elif isinstance(error, PermissionError) or getattr(error, "errno", None) == errno.EROFS:
        expected = f"permission to write {path}"
    else:
        expected = f"to write {path}"
    return WorkdirError(f"Expected {expected}. Received: {type(error).__name__}: {error}. Nothing half-written "
                        "was kept; free the space or fix the permission and rerun the same command to resume.")


def check_writable(workdir, flag="--workdir"):
    """Refuses a workdir that is a file, lies under a file, or cannot be written;
    creates nothing."""
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"Expected {flag} to be a folder. Received: {flag}={workdir}, which is a file")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise WorkdirError(f"Expected {flag} to lie in a folder. Received: {flag}={workdir}, under the file "
                           f"{existing}")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "a read-only folder" if existing == path else f"under the read-only folder {existing}"
        raise WorkdirError(f"Expected {flag} to be writable. Received: {flag}={workdir}, {what}")


def check_run(workdir, identity, flag="--workdir"):
    """Returns the finished results of the run `identity` names in `workdir`, or None
    to (re)start it.

    `run.json` names the run a workdir trains; a rerun with the same identity resumes
    (or, once `results.json` is written, returns it untouched); another identity is
    refused, so nothing of the earlier run is overwritten. Read-only.
    """
    run_path = os.path.join(workdir, RUN_FILE)
    if not os.path.exists(run_path):
        earlier = sorted(n for n in RUN_OUTPUTS if os.path.exists(os.path.join(workdir, n)))
        if earlier:  # e.g. a run from before run.json existed: never read or overwrite it
            raise WorkdirError(
                f"Expected {flag} {workdir} to be new or to hold a run of the same configuration. "
                f"Received: files of an earlier run without {RUN_FILE}: {earlier}. Use another {flag} "
                "(nothing was changed in this one)."
            )
        return None
    run = read_json_object(run_path, "the JSON object tfinfo-transfer writes (its run's configuration)")
    earlier = run.get("config")
    if not isinstance(earlier, dict):
        raise WorkdirError(f"Expected a `config` object in {run_path}. Received: {type(earlier).__name__}. "
                           f"Use another {flag} (nothing was changed in this one).")
    earlier = {k: v for k, v in earlier.items() if k not in NON_IDENTITY_FIELDS}
    if earlier != identity:
        changed = sorted(k for k in set(earlier) | set(identity) if earlier.get(k) != identity.get(k))
        raise WorkdirError(
            f"Expected {flag} {workdir} to be new or to hold a run of the same configuration. "
            f"Received: a run whose configuration differs in {changed}. Use another {flag} "
            "(nothing was changed in this one)."
        )
    results_path = os.path.join(workdir, RESULTS_FILE)
    if os.path.exists(results_path):
        return read_json_object(results_path, "the JSON object of a finished run's results")
    return None


def write_json(path, value):
    """Writes `value` as indented JSON through `PATH.tmp<pid>`, renamed into place."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(value, f, indent=2)
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise write_error(path, error) from None


@contextlib.contextmanager
def writing_folder(folder):
    """Yields a fresh temporary folder `FOLDER.tmp<pid>` to fill; on an exception it is
    removed (an `OSError` becomes a `WorkdirError`), else the caller renames it."""
    tmp = f"{folder}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        yield tmp
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(folder, error) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class WorkdirLock:
    """`WORKDIR/run.lock` while a run trains: `with WorkdirLock(workdir): ...`.

    The lock file is written whole (a temporary file hard-linked into place, which
    fails if the lock exists), so it always holds its owner's pid and host. A lock whose
    owner on this host is not running (a killed run) is taken over with a warning; a
    live owner, or one on another host, refuses the run with a `WorkdirError`.
    """

    def __init__(self, workdir, flag="--workdir"):
        self.workdir = workdir
        self.flag = flag
        self.path = os.path.join(workdir, LOCK_FILE)
        self.held = False

    def _owner(self):
        try:
            with open(self.path) as f:
                owner = json.load(f)
            return int(owner["pid"]), str(owner["host"])
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable: not a lock this code wrote whole

    def acquire(self):
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        tmp = f"{self.path}.tmp{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                json.dump(me, f)
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return self
                except FileExistsError:
                    pass
                try:
                    owner = self._owner()
                except FileNotFoundError:
                    continue  # released meanwhile: try again
                if owner is not None and (owner[1] != me["host"] or _alive(owner[0])):
                    where = f"process {owner[0]}" + ("" if owner[1] == me["host"] else f" on {owner[1]}")
                    raise WorkdirError(
                        f"Expected {self.flag} {self.workdir} to be free. Received: a run in progress there "
                        f"(locked by {where}, {self.path}). Wait for it to end or use another {self.flag}; "
                        f"if no such run is going on, delete {self.path}.")
                log.warning("tfinfo: taking over the lock %s of %s, which is not running (a run that was "
                            "killed?)", self.path, "an unreadable owner" if owner is None else f"process {owner[0]}")
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
        except OSError as error:
            raise write_error(self.path, error) from None
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise WorkdirError(f"Expected to lock {self.flag} {self.workdir}. Received: {self.path} kept changing "
                           "(runs starting at once?); rerun the command.")

    def release(self):
        if not self.held:
            return
        self.held = False
        try:
            if self._owner() == (os.getpid(), socket.gethostname()):
                os.remove(self.path)
        except OSError:
            pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
