"""Names a person reads instead of ids: recordset and publisher names and publisher membership
from the ingest database (the one api-stats reads), and the query text behind a query hash from
the telemetry's queries table.

Each is read once per command and passed around; ids stay the keys everywhere. A name that is
unknown (or a database that is not configured or not reachable, said once as a warning) falls
back to the id, so a report never fails for want of a name. Publisher membership is as the
ingest database has it when the command runs: a recordset that moved to another publisher is
counted under its present one for every day (docs/usage.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import psycopg2

from .config import Config
from .errors import ConfigError, IdbStatsError, SourceUnreachable
from .pg import connect, one_line
from .source import quoted_name

log = logging.getLogger("idb_stats.names")

# recordsets.uuid and publishers.uuid are nullable uuid columns in idb-backend's schema (a row
# without one names nothing); name is NOT NULL for recordsets but nullable for publishers.
RECORDSETS_SQL = "SELECT uuid::text, name, publisher_uuid::text FROM {recordsets} WHERE uuid IS NOT NULL"
PUBLISHERS_SQL = "SELECT uuid::text, name FROM {publishers} WHERE uuid IS NOT NULL"
# The text is cut in the database, so a huge query never crosses the network whole.
QUERY_TEXT_SQL = (
    "SELECT query_hash, left({column}::text, %(length)s) FROM {queries} WHERE query_hash = ANY(%(hashes)s)"
)
ELLIPSIS = "…"


@dataclass(frozen=True)
class Names:
    """What the ingest database says about recordsets and publishers (empty when unread)."""

    recordsets: Mapping[str, str] = field(default_factory=dict)  # recordset id -> name
    publishers: Mapping[str, str] = field(default_factory=dict)  # publisher id -> name
    publisher_of: Mapping[str, str] = field(default_factory=dict)  # recordset id -> publisher id
    read: bool = False  # whether the ingest database was read (membership is known)

    def recordset(self, recordset_id: str) -> str:
        return self.recordsets.get(recordset_id) or recordset_id

    def publisher(self, publisher_id: str) -> str:
        return self.publishers.get(publisher_id) or publisher_id

    def recordsets_of(self, publisher_id: str) -> list[str]:
        """The publisher's recordsets now, sorted by id."""
        return sorted(rs for rs, p in self.publisher_of.items() if p == publisher_id)

    def publisher_ids(self) -> list[str]:
        """Every publisher that has a recordset or a name, sorted by id."""
        return sorted({*self.publishers, *self.publisher_of.values()})


NO_NAMES = Names()


def load_names(config: Config, required: bool = False) -> Names:
    """Read every recordset's and publisher's name and membership, in one read-only transaction.

    required (publisher roll-ups, monthly-report): a missing or unreachable ingest database is an
    error (exit 3, or 4 when unreachable); otherwise a warning, and ids are shown instead."""
    if not config.api_dsn:
        problem = "no ingest database configured (api.dsn)"
        if required:
            raise ConfigError(
                [
                    f"api.dsn: publishers need the ingest database ({problem}): "
                    "set [api] dsn or IDB_STATS_API_DSN"
                ]
            )
        log.warning("%s: showing ids instead of names", problem)
        return NO_NAMES
    try:
        return _read_names(config)
    except IdbStatsError as exc:
        if required:
            raise
        log.warning("names unavailable, showing ids instead: %s", exc)
        return NO_NAMES


def _read_names(config: Config) -> Names:
    assert config.api_dsn is not None
    conn = connect(config.api_dsn, "ingest (names)")
    try:
        conn.set_session(readonly=True)
        with conn, conn.cursor() as cur:
            recordsets = quoted_name(config.recordsets_table, conn)
            publishers = quoted_name(config.publishers_table, conn)
            cur.execute(RECORDSETS_SQL.format(recordsets=recordsets))
            recordset_rows = cur.fetchall()
            cur.execute(PUBLISHERS_SQL.format(publishers=publishers))
            publisher_rows = cur.fetchall()
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn) as exc:
        raise ConfigError(
            [f"api.recordsets_table / api.publishers_table: {one_line(exc)} (check the table names)"]
        ) from None
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise ConfigError([f"api.dsn: {one_line(exc)} (grant SELECT on the two tables)"]) from None
    except psycopg2.OperationalError as exc:
        raise SourceUnreachable(f"ingest database: {one_line(exc)}") from None
    finally:
        conn.close()
    return Names(
        recordsets={rs: name for rs, name, _ in recordset_rows if name},
        publishers={p: name for p, name in publisher_rows if name},
        publisher_of={rs: p for rs, _, p in recordset_rows if p},
        read=True,
    )


def cut(text: str, length: int) -> str:
    """At most `length` characters, the last an ellipsis when the text was longer."""
    return text if len(text) <= length else text[: length - 1] + ELLIPSIS


def query_texts(config: Config, hashes: Iterable[str]) -> dict[str, str]:
    """The query behind each hash, cut to reports.query_text_length; {} when hidden by
    reports.query_text = false, and when the telemetry cannot tell (warned: hashes are shown)."""
    wanted = sorted(set(hashes))
    if not config.query_text or not wanted:
        return {}
    try:
        conn = connect(config.source_dsn, "telemetry (query text)")
    except IdbStatsError as exc:
        log.warning("query text unavailable, showing hashes: %s", exc)
        return {}
    try:
        conn.set_session(readonly=True)
        with conn, conn.cursor() as cur:
            sql = QUERY_TEXT_SQL.format(
                column=quoted_name(config.query_text_column, conn),
                queries=quoted_name(config.queries_table, conn),
            )
            # One more character than shown, so cut() knows the text went on.
            cur.execute(sql, {"length": config.query_text_length + 1, "hashes": wanted})
            rows = cur.fetchall()
    except psycopg2.Error as exc:
        log.warning(
            "query text unavailable (source.query_text_column %r), showing hashes: %s",
            config.query_text_column,
            one_line(exc),
        )
        return {}
    finally:
        conn.close()
    return {h: cut(text, config.query_text_length) for h, text in rows if text is not None}
