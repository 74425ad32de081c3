"""SIGTERM and SIGINT: stop the current step, cancel the server's queries, let the run record
itself as interrupted and release its lock.

Python runs a signal handler in the main thread between bytecodes, but a query keeps the main
thread inside libpq until the server answers, minutes on a big day. So the handler's C half also
writes the signal to a pipe, and a watcher thread reading it acts at once: it cancels every
running PostgreSQL query of this process (connection.cancel() is made to be called from another
thread) and stops the run's worker processes. The query then fails, the Python half raises
Interrupted in the main thread, and the run unwinds through its ledger entry and its lock.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import weakref
from typing import Any

import psycopg2.errorcodes
import psycopg2.extensions

SIGNALS = (signal.SIGTERM, signal.SIGINT)
QUERY_CANCELED = psycopg2.errorcodes.QUERY_CANCELED  # SQLSTATE 57014
_connections: weakref.WeakSet[psycopg2.extensions.connection] = weakref.WeakSet()
_received: list[int] = []
_raised: list[bool] = []


class Interrupted(BaseException):
    """The process was asked to stop. Not an Exception, so that no client library's
    `except Exception` (a retry loop, say) takes it for a failure to retry; not a
    KeyboardInterrupt either, which click turns into "aborted" and exit 1."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum  # 143 for SIGTERM, 130 for SIGINT, as shells report them
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def track(conn: psycopg2.extensions.connection) -> psycopg2.extensions.connection:
    """Register a connection whose running query a signal cancels."""
    _connections.add(conn)
    return conn


def received() -> int | None:
    """The signal that asked this process to stop, if one did."""
    return _received[0] if _received else None


def cancelled_by_server(exc: BaseException) -> bool:
    """A query the server cancelled on its own (SQLSTATE 57014 query_canceled: its
    statement_timeout, or an administrator's pg_cancel_backend) rather than at this process's
    request: a signal's cancel is recorded in received() before any query is cancelled. Told by
    the SQLSTATE, never by the message, which the server writes in its lc_messages language."""
    return getattr(exc, "pgcode", None) == QUERY_CANCELED and not _received


def check() -> None:
    """Raise Interrupted if a signal arrived: called between steps the server cannot cancel
    (a search store's requests)."""
    if _received:
        raise Interrupted(_received[0])


def install(worker: bool = False) -> None:
    """From the main thread. A worker process (worker=True) leaves at once after cancelling its
    queries: its parent records the run."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in SIGNALS:
        signal.signal(signum, _raise_once)
    threading.Thread(target=_watch, args=(read_end, worker), name="idb-stats signals", daemon=True).start()


def _raise_once(signum: int, frame: Any) -> None:
    if not _received:
        _received.append(signum)
    # A second signal while the run records itself and lets go of its lock is not raised again:
    # cleaning up is what it asks for.
    if _raised:
        return
    _raised.append(True)
    raise Interrupted(_received[0])


def _watch(read_end: int, worker: bool) -> None:
    while True:
        data = os.read(read_end, 16)
        if not data:
            return
        for signum in data:
            if signum not in SIGNALS:
                continue
            if not _received:
                _received.append(signum)
            cancel_queries()
            if worker:
                os._exit(128 + signum)
            for child in multiprocessing.active_children():
                child.terminate()  # workers cancel their own queries and leave (install(worker=True))


def cancel_queries() -> None:
    for conn in list(_connections):
        if not conn.closed:
            with contextlib.suppress(psycopg2.Error):
                conn.cancel()
