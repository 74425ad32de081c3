"""PostgreSQL connections as idb-stats opens them, and the run lock one of them holds: an advisory
lock on the telemetry database, one run per store."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions

from . import interrupt
from .config import Config
from .errors import LockHeld, SourceUnreachable
from .ports import Store
from .secrets import scrub

# Sums idb-stats reads as numeric (exact beyond bigint) are always integral: read them as int.
NUMERIC_AS_INT = psycopg2.extensions.new_type(
    psycopg2.extensions.DECIMAL.values, "NUMERIC_AS_INT", lambda text, _: None if text is None else int(text)
)


def one_line(exc: BaseException) -> str:
    """A database error's message on one line: libpq's run over several ("server closed the
    connection unexpectedly\n\tThis probably means ..."), and the journal gets one line an error."""
    return " ".join(str(exc).split())


def connect(dsn: str, purpose: str) -> psycopg2.extensions.connection:
    """Connect, turning failure into an error that names the server but never the password."""
    try:
        conn = psycopg2.connect(dsn, application_name=f"idb-stats {purpose}", connect_timeout=10)
    except psycopg2.OperationalError as exc:
        detail = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, dsn)
        raise SourceUnreachable(f"cannot connect to the {purpose} database: {detail}") from None
    return interrupt.track(conn)  # a signal cancels its running query


def lock_name(store_identity: str) -> str:
    """The text whose hash is the run lock's advisory lock key."""
    return f"idb-stats {store_identity}"


@contextlib.contextmanager
def run_lock(
    config: Config,
    store_identity: str,
    timeout: float,
    run: dict[str, Any] | None = None,
    ledger: Store | None = None,
) -> Iterator[None]:
    """One run per store: an advisory lock held by a source connection, freed if the run dies.

    The connection's application_name carries the run's command and id, so a run that finds the
    lock taken can say who holds it (and the ledger, how long since).
    """
    who = f"lock {run['command']} {run['run_id']}" if run else "lock"
    conn = connect(config.source_dsn, who)
    conn.autocommit = True
    try:
        deadline = time.monotonic() + timeout
        with conn.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (lock_name(store_identity),)
                )
                if cur.fetchone() == (True,):
                    break
                if time.monotonic() >= deadline:
                    holder = _lock_holder(cur, store_identity, ledger)
                    raise LockHeld(
                        f"another idb-stats run holds the lock for this store ({holder}; waited "
                        f"{timeout:g} s): wait for it to finish, or raise --lock-timeout to wait longer"
                    )
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        yield
    finally:
        conn.close()


def _lock_holder(cur: Any, store_identity: str, ledger: Store | None) -> str:
    """Who holds the run lock: its session as the server sees it, and its run in the ledger."""
    cur.execute("SELECT hashtextextended(%s, 0)", (lock_name(store_identity),))
    (key,) = cur.fetchone()
    # A bigint advisory key shows in pg_locks as two oids: the high and the low 32 bits.
    cur.execute(
        "SELECT a.application_name, COALESCE(host(a.client_addr), 'local socket'), a.backend_start "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid AND l.objid = %s::oid "
        "AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
    )
    row = cur.fetchone()
    if row is None:
        return "holder not visible to this role"
    application, client, since = row
    session = f"connected from {client} since {since:%Y-%m-%d %H:%M:%S %Z}"
    named = application.removeprefix("idb-stats lock").split()
    if len(named) != 2:
        return f"session {application!r} {session}"
    command, run_id = named
    holder = f"{command} run {run_id}, {session}"
    if ledger is not None:
        with contextlib.suppress(Exception):  # the ledger only adds detail to the message
            run = next((r for r in ledger.runs(limit=50) if r.get("run_id") == run_id), None)
            if run:
                holder += f", host {run.get('host')} pid {run.get('pid')}"
    return holder
