"""The daily recordset size snapshot: records and media records per recordset, counted live.

The uuids table only has the present, so a missed day cannot be rebuilt: run it every day.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from .config import Config
from .errors import ConfigError
from .source import connect, quoted_name

COUNT_SQL = """
SELECT parent::text,
       count(*) FILTER (WHERE type = 'record'),
       count(*) FILTER (WHERE type = 'mediarecord')
FROM {uuids}
WHERE deleted = false AND type IN ('record', 'mediarecord') AND parent IS NOT NULL
GROUP BY parent
ORDER BY parent"""


def snapshot_documents(config: Config, taken_at: datetime) -> Iterator[dict[str, Any]]:
    """One document per recordset, streamed from one grouped query."""
    if not config.api_dsn:
        raise ConfigError(
            [
                "api.dsn: api-stats needs the ingest database (IDB_STATS_API_DSN, [api] dsn, "
                "or an api-dsn credential)"
            ]
        )
    conn = connect(config.api_dsn, "ingest (uuids)")
    try:
        conn.set_session(readonly=True)
        with conn, conn.cursor(name="api_stats") as cur:
            cur.itersize = 5000
            cur.execute(COUNT_SQL.format(uuids=quoted_name(config.uuids_table, conn)))
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
