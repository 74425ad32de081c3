"""idb-stats: daily per-recordset usage statistics from search API telemetry."""

import os
import sys

__version__ = "0.1.0"

# Set by a run for the `--jobs` workers it spawns: the process id of their parent, the run.
WORKER_PARENT_ENV = "IDB_STATS_WORKER_PARENT"
PR_SET_PDEATHSIG = 1
SIGTERM = 15


def _end_with_parent() -> None:
    """A `--jobs` worker must not outlive its run. It is a fresh interpreter (multiprocessing's
    spawn) whose first code of ours is this package's import, which starts its 1-2 s of imports
    (click, psycopg2, the use cases) before the pool's initializer runs: asking for SIGTERM on the
    parent's death only there left workers alive that long after a SIGKILL of the run. Asked here,
    the kernel ends a worker at any point of its start; a parent that died before this line is
    seen at once (the worker was handed to another process) and the worker leaves."""
    parent = os.environ.get(WORKER_PARENT_ENV)
    if sys.platform == "linux" and parent and "--multiprocessing-fork" in sys.orig_argv:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, SIGTERM)
        if os.getppid() != int(parent):
            os._exit(128 + SIGTERM)


_end_with_parent()
