"""PostgreSQL connections as idb-stats opens them, and the PostgreSQL store's run lock one of them
holds: an advisory lock in the store's database, one run per store."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions

from . import interrupt
from .errors import LockHeld, SourceUnreachable, StoreUnreachable
from .ports import Store
from .runs import LockHolder, RunRecord
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


# PostgreSQL keeps the first 63 bytes of an application_name (NAMEDATALEN - 1).
APPLICATION_NAME_BYTES = 63


def name_phase(cur: Any, purpose: str, phase: str) -> None:
    """Show the transaction's phase in pg_stat_activity as "idb-stats PURPOSE: PHASE" until it
    ends (SET LOCAL): a DBA, and the tests that signal a run at a given moment, tell what each of
    the run's sessions is doing by its name rather than by its query's text."""
    name = f"idb-stats {purpose}: {phase}".encode()[:APPLICATION_NAME_BYTES].decode("utf-8", "ignore")
    cur.execute("SET LOCAL application_name = %s", (name,))


def lock_name(store_identity: str) -> str:
    """The text whose hash is the run lock's advisory lock key."""
    return f"idb-stats {store_identity}"


class AdvisoryRunLock:
    """The PostgreSQL store's run lock: a session advisory lock in the store's own database, held
    by a connection of its own, so the server frees it if the run dies.

    The connection's application_name carries the run's command and id, so a run that finds the
    lock taken can say who holds it (and the ledger, on which host and process).
    """

    def __init__(self, dsn: str, store_identity: str, ledger: Store):
        self._dsn = dsn
        self._name = lock_name(store_identity)
        self._ledger = ledger

    @contextlib.contextmanager
    def hold(self, run: RunRecord, timeout: float) -> Iterator[None]:
        conn = self._connect(f"lock {run.command.replace(' ', '_')} {run.run_id}")
        try:
            deadline = time.monotonic() + timeout
            with conn.cursor() as cur:
                while True:
                    cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (self._name,))
                    if cur.fetchone() == (True,):
                        break
                    if time.monotonic() >= deadline:
                        holder = self._holder(cur)
                        raise LockHeld(
                            "another idb-stats run holds the lock for this store "
                            f"({holder.description if holder else 'released meanwhile'}; waited "
                            f"{timeout:g} s): wait for it to finish, or raise --lock-timeout to wait longer"
                        )
                    time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
            yield
        finally:
            conn.close()

    def holder(self) -> LockHolder | None:
        conn = self._connect("lock check")
        try:
            with conn.cursor() as cur:
                return self._holder(cur)
        finally:
            conn.close()

    def _connect(self, purpose: str) -> psycopg2.extensions.connection:
        try:
            conn = connect(self._dsn, purpose)
        except SourceUnreachable as exc:
            raise StoreUnreachable(str(exc).replace(purpose, "statistics store", 1)) from None
        conn.autocommit = True
        return conn

    def _holder(self, cur: Any) -> LockHolder | None:
        """Who holds the run lock: its session as the server sees it, and its run in the ledger."""
        cur.execute("SELECT hashtextextended(%s, 0)", (self._name,))
        (key,) = cur.fetchone()
        # A bigint advisory key shows in pg_locks as two oids: the high and the low 32 bits.
        # pg_locks lists every session's locks to any role; pg_stat_activity may hide the session.
        cur.execute(
            "SELECT a.application_name, COALESCE(host(a.client_addr), 'local socket'), a.backend_start "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid AND l.objid = %s::oid "
            "AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
        )
        row = cur.fetchone()
        if row is None:
            return None
        application, client, since = row
        if application is None:
            return LockHolder(None, "holder not visible to this role")
        session = f"connected from {client} since {since:%Y-%m-%d %H:%M:%S %Z}"
        named = application.removeprefix("idb-stats lock").split()
        if len(named) != 2:
            return LockHolder(None, f"session {application!r} {session}")
        command, run_id = named[0].replace("_", " "), named[1]
        holder = f"{command} run {run_id}, {session}"
        with contextlib.suppress(Exception):  # the ledger only adds detail to the message
            entries = (RunRecord.from_dict(r) for r in self._ledger.runs(limit=50))
            entry = next((r for r in entries if r.run_id == run_id), None)
            if entry:
                holder += f", host {entry.host} pid {entry.pid}"
        return LockHolder(run_id, holder)
