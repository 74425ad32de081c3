"""The api-stats use case: the daily recordset size snapshot, records and media records per
recordset counted live, written to the store.

The uuids table only has the present, so a missed day cannot be rebuilt: run it every day.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from psycopg2 import sql

from .clock import SYSTEM_CLOCK, Clock
from .config import Config
from .errors import ConfigError
from .ledger import write_run
from .pg import connect
from .ports import SnapshotWriting, given_or_opened
from .sqltext import table
from .stores import open_store

# Records and media records per recordset; the table is the `{uuids}` identifier.
COUNT_SQL = sql.SQL("""
SELECT parent::text,
       count(*) FILTER (WHERE type = 'record'),
       count(*) FILTER (WHERE type = 'mediarecord')
FROM {uuids}
WHERE deleted = false AND type IN ('record', 'mediarecord') AND parent IS NOT NULL
GROUP BY parent
ORDER BY parent""")


def snapshot_documents(config: Config, taken_at: datetime) -> Iterator[dict[str, Any]]:
    """One document per recordset, streamed from one grouped query when read. A configuration
    without the ingest database is refused here, when called: before the run takes the lock and
    writes its ledger entry."""
    if not config.api_dsn:
        raise ConfigError(
            [
                "api.dsn: api-stats needs the ingest database (IDB_STATS_API_DSN, [api] dsn, "
                "or an api-dsn credential)"
            ]
        )
    return _counted(config.api_dsn, config.uuids_table, taken_at)


def _counted(dsn: str, uuids_table: str, taken_at: datetime) -> Iterator[dict[str, Any]]:
    conn = connect(dsn, "ingest (uuids)")
    try:
        conn.set_session(readonly=True)
        with conn, conn.cursor(name="api_stats") as cur:
            cur.itersize = 5000
            cur.execute(COUNT_SQL.format(uuids=table(uuids_table)))
            stamp = taken_at.isoformat(timespec="seconds")
            for parent, records, mediarecords in cur:
                yield {
                    "recordset_id": parent,
                    "harvest_date": stamp,
                    "records_count": records,
                    "mediarecords_count": mediarecords,
                }
    finally:
        conn.close()


# The recordset sizes of a moment, one document per recordset (snapshot_documents reads them).
SizeReader = Callable[[Config, datetime], Iterable[dict[str, Any]]]


def api_stats(
    config: Config,
    lock_timeout: float | None = None,
    clock: Clock = SYSTEM_CLOCK,
    store: SnapshotWriting | None = None,
    sizes: SizeReader = snapshot_documents,
) -> dict[str, Any]:
    """Take today's recordset size snapshot; a second run the same (UTC) day replaces it.
    store and sizes: the caller's adapters (else the configuration's store, and the ingest
    database's uuids table)."""
    taken_at = clock.now()
    documents = sizes(config, taken_at)
    with (
        given_or_opened(store, lambda: open_store(config)) as store,
        write_run(config, store, "api-stats", lock_timeout) as run,
    ):
        started = time.monotonic()
        written = store.write_snapshot(taken_at.date(), documents)
        summary = {
            "snapshot_date": taken_at.date().isoformat(),
            "recordsets": written,
            "seconds": round(time.monotonic() - started, 3),
            "run_id": run.run_id,
        }
        run.snapshot = summary
    return summary
