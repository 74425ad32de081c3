"""The PostgreSQL store, the embedded default: a day is published in one transaction.

Long because it is the whole Store protocol on one backend (publish with totals, ledger, change
records, forget, reads for show/report) with its schema and the upgrade of older stores; the SQL
of each operation sits beside the method that runs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from typing import Any

import psycopg2
import psycopg2.errorcodes
import psycopg2.extras
from psycopg2 import sql

from .. import changes, interrupt
from ..config import Config
from ..documents import add_terms
from ..errors import StoreError, StoreUnreachable
from ..json_text import compact
from ..model import BLOCKS, COUNT_FIELDS, OTHER_TERM, RECORD_TYPES, DayStats, HeldDays
from ..pg import NUMERIC_AS_INT, AdvisoryRunLock, connect, one_line
from ..ports import ClosedOnExit, Document
from ..runs import RunRecord
from ..totals import Summary, Totals, day_ranges, listed_days, rebuilt, replace_day, summarize

COPY_BATCH_BYTES = 4_000_000

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS {s};
-- doc is json (not jsonb) so export returns each document exactly as it was built. summary holds
-- what totals need; counts, countries and terms are what `show` and `report` read (read_columns).
CREATE TABLE IF NOT EXISTS {s}.daily (
  harvest_date date NOT NULL,
  recordset_id text COLLATE "C" NOT NULL,
  doc json NOT NULL,
  summary jsonb NOT NULL,
  counts numeric[] NOT NULL,
  countries jsonb NOT NULL,
  terms jsonb NOT NULL,
  PRIMARY KEY (harvest_date, recordset_id));
CREATE INDEX IF NOT EXISTS daily_recordset ON {s}.daily (recordset_id, harvest_date);
CREATE TABLE IF NOT EXISTS {s}.totals (
  recordset_id text COLLATE "C" PRIMARY KEY,
  doc json NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.days (
  harvest_date date PRIMARY KEY,
  run_id text NOT NULL,
  completed_at timestamptz NOT NULL DEFAULT now(),
  stats jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.runs (
  run_id text PRIMARY KEY,
  started_at timestamptz NOT NULL,
  doc jsonb NOT NULL);
-- Every change to the numbers of an already published (recordset, day): see changes.py.
CREATE TABLE IF NOT EXISTS {s}.changes (
  id bigserial PRIMARY KEY,
  changed_at timestamptz NOT NULL,
  harvest_date date NOT NULL,
  recordset_id text COLLATE "C" NOT NULL,
  doc jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.api_snapshots (
  snapshot_date date NOT NULL,
  recordset_id text COLLATE "C" NOT NULL,
  doc json NOT NULL,
  PRIMARY KEY (snapshot_date, recordset_id));
-- Publisher page views, one document per publisher and harvest date (schema version 2).
CREATE TABLE IF NOT EXISTS {s}.publishers (
  harvest_date date NOT NULL,
  publisher_id text COLLATE "C" NOT NULL,
  doc json NOT NULL,
  PRIMARY KEY (harvest_date, publisher_id));
-- The schema's version and the figure of each position of daily.counts (see SCHEMA_VERSION).
CREATE TABLE IF NOT EXISTS {s}.layout (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  version int NOT NULL,
  count_fields text[] NOT NULL);
"""

# The figures `show` and `report` sum, each by name: a block's count and total, named
# "record_type.type.count" (a path into the row's summary, see figures_of). daily.counts holds
# them as an array in the order the store's `layout` table records, and every statement finds a
# figure's position by its name there, never by its place in this tuple. So adding a block (or
# any named figure: append its name here and its value in figures_of) is a migration `init`
# detects and makes: it moves every row's counts to the new layout by name, and computes a
# figure the store never had from the row's summary. Until then a store whose layout differs is
# refused (exit 5, "run `idb-stats init`"), and a CHECK on the array's length makes an older
# idb-stats still writing the old layout fail instead of shifting the columns. A layout naming a
# figure this version does not know was made by a newer idb-stats: refused too, as init would
# drop it. Version 1 is every store made before the layout was recorded.
SCHEMA_VERSION = 2
FIGURE_NAMES: tuple[str, ...] = tuple(".".join(field) for field in COUNT_FIELDS)
VERSION_1_FIGURES = tuple(f"{rt}.{ty}.{f}" for rt, ty, f in COUNT_FIELDS if rt in RECORD_TYPES)
COUNTS_LENGTH_CHECK = sql.Identifier("daily_counts_layout")


def figures_of(summary: Summary) -> dict[str, int]:
    """A document's figures by name (FIGURE_NAMES): a block it lacks is zeros."""
    out = {}
    for rt, ty in BLOCKS:
        count, total = summary.counts.get((rt, ty), (0, 0))
        out[f"{rt}.{ty}.count"], out[f"{rt}.{ty}.total"] = count, total
    return out


# COPY's text format gives meaning to four characters in a column: backslash (escapes, \N for
# NULL, \. for the end of data), tab (next column), newline and carriage return (next row).
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_line(*columns: str) -> str:
    """One row of COPY text, every column escaped, so any id or text arrives exactly as given
    (a NUL, which no PostgreSQL text can hold, is refused by the server)."""
    return "\t".join(column.translate(_COPY_ESCAPES) for column in columns) + "\n"


def range_filter(recordsets_named: bool) -> sql.Composed:
    """Daily documents of the named recordsets (%(rs)s; all when none are) within optional bounds
    (%(first)s, %(last)s).

    With no recordsets the condition is left out, not ORed away: an OR would keep PostgreSQL
    from using the (recordset_id, harvest_date) index when recordsets are named.
    """
    return sql.SQL(
        "{}harvest_date >= COALESCE(%(first)s, '-infinity'::date) "
        "AND harvest_date <= COALESCE(%(last)s, 'infinity'::date)"
    ).format(sql.SQL("recordset_id = ANY(%(rs)s::text[]) AND " if recordsets_named else ""))


def figure_from_summary(name: str) -> sql.Composed:
    """A figure computed in SQL from a row's summary, the path its name spells (0 when absent)."""
    *path, leaf = name.split(".")
    return sql.SQL("COALESCE((summary{}->>{})::numeric, 0)").format(
        sql.SQL("").join(sql.SQL("->{}").format(sql.Literal(key)) for key in path), sql.Literal(leaf)
    )


def read_columns_sql(schema: sql.Identifier) -> sql.Composed:
    """Stores made before the read columns existed get them in `init`, computed from doc and
    summary with the same rules as read_columns."""
    return sql.SQL(READ_COLUMNS_TEMPLATE).format(
        s=schema,
        counts=sql.SQL(", ").join(figure_from_summary(name) for name in FIGURE_NAMES),
        other=sql.Literal(OTHER_TERM),
    )


READ_COLUMNS_TEMPLATE = """
ALTER TABLE {s}.daily ADD COLUMN counts numeric[], ADD COLUMN countries jsonb, ADD COLUMN terms jsonb;
UPDATE {s}.daily SET
  counts = ARRAY[{counts}],
  countries = (
    SELECT COALESCE(jsonb_object_agg(country, hits), '{{}}') FROM (
      SELECT c.key AS country, sum(c.value::numeric) AS hits
      FROM jsonb_each(summary) rt, jsonb_each(rt.value) ty, jsonb_each_text(ty.value->'countries') c
      GROUP BY 1) by_country),
  terms = (
    SELECT jsonb_build_object(
      'items', COALESCE(jsonb_object_agg(term, n) FILTER (WHERE kind = 'items'), '{{}}'),
      'queries', COALESCE(jsonb_object_agg(term, n) FILTER (WHERE kind = 'queries'), '{{}}'))
    FROM (
      SELECT k.kind, t->>'term' AS term, sum((t->>'count')::numeric) AS n
      FROM (VALUES ('items', '$.*.*.items[*]'::jsonpath), ('queries', '$.*.*.queries[*]'::jsonpath))
             k(kind, path),
           jsonb_path_query(doc::jsonb, k.path) t
      WHERE t->>'term' <> {other} GROUP BY 1, 2) by_term);
ALTER TABLE {s}.daily ALTER COLUMN counts SET NOT NULL, ALTER COLUMN countries SET NOT NULL,
  ALTER COLUMN terms SET NOT NULL;
"""


def series_sql(
    schema: sql.Identifier, layout: Sequence[str], recordsets_named: bool, by_recordset: bool
) -> sql.Composed:
    """Every figure summed by period (%(interval)s), by recordset or not, each read from the
    position the store's layout gives its name. Sums are numeric, never bigint: a day's sum may
    pass 2**63 - 1 (read as int: NUMERIC_AS_INT)."""
    position = {name: i for i, name in enumerate(layout, 1)}
    return sql.SQL(
        "SELECT date_trunc(%(interval)s, harvest_date::timestamp)::date AS period, "
        "{recordset} AS recordset_id, {sums} FROM {s}.daily WHERE {where} "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    ).format(
        recordset=_recordset_column(by_recordset),
        sums=sql.SQL(", ").join(
            sql.SQL("sum(counts[{}]) AS {}").format(sql.Literal(position[name]), sql.Identifier(name))
            for name in FIGURE_NAMES
        ),
        s=schema,
        where=range_filter(recordsets_named),
    )


def _recordset_column(by_recordset: bool) -> sql.SQL:
    return sql.SQL("recordset_id" if by_recordset else "NULL::text")


def top_countries_sql(schema: sql.Identifier, recordsets_named: bool, by_recordset: bool) -> sql.Composed:
    return sql.SQL(
        "SELECT recordset_id, country, hits FROM ("
        "  SELECT {recordset} AS recordset_id, c.key AS country, sum(c.value::numeric) AS hits,"
        "         row_number() OVER (PARTITION BY {recordset}"
        "                            ORDER BY sum(c.value::numeric) DESC, c.key) AS rank"
        "  FROM {s}.daily, jsonb_each_text(countries) c WHERE {where} GROUP BY 1, 2"
        ") ranked WHERE rank <= %(limit)s ORDER BY recordset_id, rank"
    ).format(recordset=_recordset_column(by_recordset), s=schema, where=range_filter(recordsets_named))


def top_terms_sql(schema: sql.Identifier) -> sql.Composed:
    """A recordset's top items and queries (%(limit)s of each)."""
    return sql.SQL(
        """
SELECT kind, term, count FROM (
  SELECT k.kind, t.key AS term, sum(t.value::numeric) AS count,
         row_number() OVER (PARTITION BY k.kind ORDER BY sum(t.value::numeric) DESC, t.key) AS rank
  FROM {s}.daily, jsonb_each(terms) k(kind, lists), jsonb_each_text(k.lists) t
  WHERE {where} GROUP BY 1, 2
) ranked WHERE rank <= %(limit)s ORDER BY kind, rank"""
    ).format(s=schema, where=range_filter(True))


def migrate_counts_sql(schema: sql.Identifier, layout: Sequence[str]) -> sql.Composed:
    """Every row's counts moved from the store's layout to this version's, by figure name; a
    figure the store did not have is computed from the row's summary (0 where the document lacks
    its block: a document an older version wrote reads the new block as zeros)."""
    position = {name: i for i, name in enumerate(layout, 1)}
    moved = sql.SQL(", ").join(
        sql.SQL("COALESCE(counts[{}], 0)").format(sql.Literal(position[name]))
        if name in position
        else figure_from_summary(name)
        for name in FIGURE_NAMES
    )
    return sql.SQL(
        "ALTER TABLE {s}.daily DROP CONSTRAINT IF EXISTS {check}; "
        "UPDATE {s}.daily SET counts = ARRAY[{moved}]::numeric[]"
    ).format(s=schema, check=COUNTS_LENGTH_CHECK, moved=moved)


def counts_check_sql(schema: sql.Identifier) -> sql.Composed:
    return sql.SQL("ALTER TABLE {s}.daily ADD CONSTRAINT {check} CHECK (cardinality(counts) = {n})").format(
        s=schema, check=COUNTS_LENGTH_CHECK, n=sql.Literal(len(FIGURE_NAMES))
    )


# Recordsets whose totals are merged at once when a day is published (see _update_totals).
TOTALS_CHUNK = 200


class SummaryTexts(Mapping[str, Summary]):
    """A day's summaries by recordset, held as their JSON text and parsed when read: a wide day's
    1,600 summaries are 4.9 MB of JSON, several times that as Summary objects."""

    def __init__(self, texts: dict[str, str]) -> None:
        self._texts = texts

    def __getitem__(self, recordset_id: str) -> Summary:
        return Summary.from_json(json.loads(self._texts[recordset_id]))

    def __iter__(self) -> Iterator[str]:
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)


def read_columns(doc: Document, summary: Summary) -> tuple[str, str, str]:
    """What `show` and `report` sum, precomputed so they never parse a document: the figures in
    FIGURE_NAMES order (as a COPY array: the layout init made current), hits by country over every
    block, and items and queries summed over every block without __other__ (the cut-off tail,
    which is not a term)."""
    figures = figures_of(summary)
    counts = ",".join(str(figures[name]) for name in FIGURE_NAMES)
    countries: dict[str, int] = {}
    for by_country in summary.countries.values():
        for country, hits in by_country.items():
            countries[country] = countries.get(country, 0) + hits
    terms: dict[str, dict[str, int]] = {"items": {}, "queries": {}}
    add_terms(doc, terms)
    return "{" + counts + "}", compact(countries), compact(terms)


class PostgresStore(ClosedOnExit):
    def __init__(self, config: Config):
        self.schema = config.store_schema
        self._dsn = config.store_dsn
        self._timeouts = {
            "statement_timeout": config.statement_timeout,
            "lock_timeout": config.lock_wait_timeout,
        }
        self._conn = self._connect()
        where = f"{self._server_identity()}/{self.schema}"
        self.identity = "postgres:" + hashlib.sha256(where.encode()).hexdigest()[:16]
        self._schema = sql.Identifier(self.schema)
        self._schema_current = False

    def _connect(self) -> psycopg2.extensions.connection:
        try:
            conn = connect(self._dsn, "statistics store")
        except Exception as exc:
            raise StoreUnreachable(one_line(exc)) from None
        psycopg2.extensions.register_type(NUMERIC_AS_INT, conn)
        # Bounded waits: a session idling in a transaction on the store's tables, or a runaway
        # statement, fails the run (exit 5) instead of holding the run lock for hours.
        try:
            with conn, conn.cursor() as cur:
                # The day's transaction is idle while it waits for documents (the source aggregating,
                # the next batch being built): a database's idle_in_transaction_session_timeout,
                # meant for forgotten sessions, ended it mid-day (exit 5).
                cur.execute(
                    "SELECT set_config('statement_timeout', %s, false), "
                    "set_config('lock_timeout', %s, false), "
                    "set_config('idle_in_transaction_session_timeout', '0', false)",
                    tuple(f"{int(seconds * 1000)}ms" for seconds in self._timeouts.values()),
                )
                # Documents compressed with lz4 where the server has it (PostgreSQL 14+ built with
                # it): writing a wide day's documents took 1.1 s of the server's CPU against 2.2 s
                # with the default pglz (issue 18). Values of either kind are read alike.
                cur.execute(
                    "SELECT set_config('default_toast_compression', 'lz4', false) FROM pg_settings "
                    "WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
                )
        except psycopg2.Error as exc:
            conn.close()
            raise StoreError(f"setting the store session's timeouts failed: {one_line(exc)}") from None
        return conn

    def _server_identity(self) -> str:
        """The database as its server names it, whatever host, port or socket the DSN spells:
        the cluster's system identifier and the database name."""
        try:
            with self._conn, self._conn.cursor() as cur:
                cur.execute("SELECT (SELECT system_identifier FROM pg_control_system()), current_database()")
                system_identifier, database = cur.fetchone() or (None, None)
            return f"{system_identifier}/{database}"
        except psycopg2.Error:
            # Where pg_control_system is not granted, fall back to the DSN's spelling.
            return _dsn_identity(self._dsn)

    def _sql(self, template: str) -> sql.Composed:
        """A statement on the store's tables: {s} is the schema."""
        return sql.SQL(template).format(s=self._schema)

    def _regclass(self, table: str) -> str:
        """One of the store's tables as to_regclass reads it."""
        return sql.Identifier(self.schema, table).as_string(self._conn)

    @contextlib.contextmanager
    def _transaction(self, what: str, cursor_factory: Any = None) -> Iterator[Any]:
        """A cursor in one transaction; any database failure rolls back and becomes a StoreError."""
        try:
            with self._conn, self._conn.cursor(cursor_factory=cursor_factory) as cur:
                yield cur
        except psycopg2.Error as exc:
            raise StoreError(f"{what} failed and was rolled back: {self._explain(exc)}") from None

    def _explain(self, exc: psycopg2.Error) -> str:
        """The server's message, and which setting to look at when it was one of our timeouts
        (told by SQLSTATE: the message is in the server's lc_messages language)."""
        message = one_line(exc)
        if exc.pgcode == psycopg2.errorcodes.LOCK_NOT_AVAILABLE:
            return (
                f"{message} (waited store.lock_wait_timeout = {self._timeouts['lock_timeout']:g} s for "
                "another session holding a lock on the store's tables: look for it in pg_stat_activity)"
            )
        if interrupt.cancelled_by_server(exc):
            return (
                f"{message} (cancelled by the server, SQLSTATE 57014: store.statement_timeout = "
                f"{self._timeouts['statement_timeout']:g} s, or an administrator)"
            )
        return message

    def init(self) -> None:
        with self._transaction("init") as cur:
            # Two first runs racing to create the schema would collide on the catalog.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"idb-stats init {self.schema}",))
            state = self._schema_state(cur)
            if state == "newer":  # before any change: migrating would drop the figures it added
                raise self._newer_schema(cur)
            layout = self._layout(cur)[1] if state != "missing" else FIGURE_NAMES
            if state == "outdated":
                cur.execute(read_columns_sql(self._schema))  # computes counts in this version's layout
                layout = FIGURE_NAMES
            cur.execute(self._sql(SCHEMA_SQL))
            if state == "narrow-counts":
                cur.execute(self._sql("ALTER TABLE {s}.daily ALTER COLUMN counts TYPE numeric[]"))
            if layout != FIGURE_NAMES:
                cur.execute(migrate_counts_sql(self._schema, layout))
            cur.execute(
                self._sql(
                    "INSERT INTO {s}.layout (version, count_fields) VALUES (%s, %s) ON CONFLICT (only_row) "
                    "DO UPDATE SET version = EXCLUDED.version, count_fields = EXCLUDED.count_fields"
                ),
                (SCHEMA_VERSION, list(FIGURE_NAMES)),
            )
            # Added once per layout (the check reads every row): the migration drops the old one.
            cur.execute(
                "SELECT EXISTS (SELECT FROM pg_constraint WHERE conname = %s AND conrelid = to_regclass(%s))",
                (COUNTS_LENGTH_CHECK.string, self._regclass("daily")),
            )
            if cur.fetchone() != (True,):
                cur.execute(counts_check_sql(self._schema))

    def _layout(self, cur: Any) -> tuple[int, tuple[str, ...]]:
        """The schema version and the figure of each position of daily.counts in this store
        (version 1: not recorded)."""
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self._regclass("layout"),))
        if cur.fetchone() != (True,):
            return 1, VERSION_1_FIGURES
        cur.execute(self._sql("SELECT version, count_fields FROM {s}.layout"))
        row = cur.fetchone()
        return (int(row[0]), tuple(row[1])) if row else (1, VERSION_1_FIGURES)

    def _newer_schema(self, cur: Any) -> StoreError:
        version, layout = self._layout(cur)
        unknown = [name for name in layout if name not in FIGURE_NAMES]
        return StoreError(
            f"the store schema {self.schema!r} was made by a newer idb-stats (schema version {version}, "
            f"this one writes {SCHEMA_VERSION}{'; figures ' + ', '.join(unknown) if unknown else ''}): "
            "upgrade idb-stats to use this store"
        )

    def _schema_state(self, cur: Any) -> str:
        """missing, outdated (made before the read columns), narrow-counts (counts as bigint[],
        which 1,100 hit counts of 2**53 - 1 overflow), old-layout (an older schema version: its
        counts in another order or without a figure, no publisher table), newer (made by a newer
        idb-stats: a later version or a figure this one does not know) or current. All but current
        need `init`; newer, an upgrade of idb-stats."""
        cur.execute(
            "SELECT to_regclass(%s) IS NOT NULL, "
            "(SELECT udt_name FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'daily' AND column_name = 'counts'), "
            "EXISTS (SELECT FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'daily' AND column_name = 'terms')",
            (self._regclass("api_snapshots"), self.schema, self.schema),
        )
        exists, counts_type, read_columns = cur.fetchone()
        if not exists:
            return "missing"
        if not read_columns:
            return "outdated"
        if counts_type == "_int8":
            return "narrow-counts"
        version, layout = self._layout(cur)
        if version > SCHEMA_VERSION or not set(layout) <= set(FIGURE_NAMES):
            return "newer"
        return "current" if layout == FIGURE_NAMES else "old-layout"

    def _initialized(self) -> bool:
        with self._transaction("reading the store schema") as cur:
            return self._schema_state(cur) != "missing"

    def _require_schema(self) -> None:
        if self._schema_current:
            return
        with self._transaction("reading the store schema") as cur:
            state = self._schema_state(cur)
            if state == "newer":
                raise self._newer_schema(cur)
        # A current schema stays current; a report's thousands of queries need not ask again.
        self._schema_current = state == "current"
        if state == "missing":
            raise StoreError(f"the store schema {self.schema!r} does not exist yet: run `idb-stats init`")
        if state in ("outdated", "narrow-counts", "old-layout"):
            raise StoreError(
                f"the store schema {self.schema!r} was made by an older idb-stats: "
                "run `idb-stats init` to add the columns this version reads"
            )

    def publish_day(
        self, stats: DayStats, documents: Iterable[Document], publishers: Sequence[Document] | None = None
    ) -> None:
        self._require_schema()
        day = stats.harvest_date
        with self._transaction(f"publishing {day}") as cur:
            if publishers is not None:  # None (import, adopt): the day's publisher documents stay
                cur.execute(self._sql("DELETE FROM {s}.publishers WHERE harvest_date = %s"), (day,))
                psycopg2.extras.execute_values(
                    cur,
                    self._sql("INSERT INTO {s}.publishers (harvest_date, publisher_id, doc) VALUES %s"),
                    [(day, doc["publisher_id"], compact(doc)) for doc in publishers],
                    page_size=1000,
                )
            cur.execute(
                self._sql("SELECT recordset_id, summary::text FROM {s}.daily WHERE harvest_date = %s"), (day,)
            )
            old = SummaryTexts(dict(cur.fetchall()))
            cur.execute(self._sql("DELETE FROM {s}.daily WHERE harvest_date = %s"), (day,))
            new = self._copy_documents(cur, documents)
            self._update_totals(cur, day, old, new)
            self._record_changes(cur, stats, old, new)
            cur.execute(
                self._sql(
                    # clock_timestamp(), not now(): when the day was done, not when its transaction began.
                    "INSERT INTO {s}.days (harvest_date, run_id, completed_at, stats) "
                    "VALUES (%s, %s, clock_timestamp(), %s) "
                    "ON CONFLICT (harvest_date) DO UPDATE SET run_id = EXCLUDED.run_id, "
                    "completed_at = EXCLUDED.completed_at, stats = EXCLUDED.stats"
                ),
                (day, stats.run_id, json.dumps(stats.as_dict())),
            )

    def forget_day(self, harvest_date: date) -> int:
        self._require_schema()
        with self._transaction(f"forgetting {harvest_date}") as cur:
            cur.execute(
                self._sql(
                    "DELETE FROM {s}.daily WHERE harvest_date = %s RETURNING recordset_id, summary::text"
                ),
                (harvest_date,),
            )
            old = SummaryTexts(dict(cur.fetchall()))
            self._update_totals(cur, harvest_date, old, SummaryTexts({}))
            cur.execute(self._sql("DELETE FROM {s}.publishers WHERE harvest_date = %s"), (harvest_date,))
            cur.execute(self._sql("DELETE FROM {s}.days WHERE harvest_date = %s"), (harvest_date,))
        return len(old)

    def _copy_documents(self, cur: Any, documents: Iterable[Document]) -> SummaryTexts:
        """COPY the documents in batches. A batch is sent from a thread while the next one is
        built, so PostgreSQL parses one batch while Python builds the next; one batch is in
        flight at a time, so memory stays at two batches. Returns the documents' summaries."""
        summaries: dict[str, str] = {}
        copy_sql = self._sql(
            "COPY {s}.daily (harvest_date, recordset_id, doc, summary, counts, countries, terms) FROM STDIN"
        )

        def send(batch: io.BytesIO) -> None:
            batch.seek(0)
            cur.copy_expert(copy_sql, batch)

        with ThreadPoolExecutor(1) as sender:
            in_flight: Future[None] | None = None
            # Bytes, not a StringIO, which would hold up to four bytes per character.
            buffer = io.BytesIO()
            for doc in documents:
                summary = summarize(doc)
                summary_text = summaries[doc["recordset_id"]] = compact(summary.to_json())
                line = copy_line(
                    doc["harvest_date"],
                    doc["recordset_id"],
                    compact(doc),
                    summary_text,
                    *read_columns(doc, summary),
                )
                buffer.write(line.encode())
                if buffer.tell() > COPY_BATCH_BYTES:
                    if in_flight:
                        in_flight.result()
                    in_flight, buffer = sender.submit(send, buffer), io.BytesIO()
            if in_flight:
                in_flight.result()
            send(buffer)
        return SummaryTexts(summaries)

    def _record_changes(self, cur: Any, stats: DayStats, old: SummaryTexts, new: SummaryTexts) -> None:
        """Log what a republish changed; a day published for the first time changes nothing."""
        cur.execute(
            self._sql("SELECT now()::text, EXISTS (SELECT FROM {s}.days WHERE harvest_date = %s)"),
            (stats.harvest_date,),
        )
        changed_at, republished = cur.fetchone()
        if not republished:
            return
        records = changes.diff_day(stats.harvest_date, old, new, stats.reason, stats.run_id, changed_at)
        psycopg2.extras.execute_values(
            cur,
            self._sql("INSERT INTO {s}.changes (changed_at, harvest_date, recordset_id, doc) VALUES %s"),
            [(r["changed_at"], r["harvest_date"], r["recordset_id"], json.dumps(r)) for r in records],
            page_size=1000,
        )

    def changes(self, since: date | None = None, recordset_id: str | None = None) -> list[dict[str, Any]]:
        if not self._initialized():
            return []
        with self._transaction("reading changes") as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self._regclass("changes"),))
            if cur.fetchone() != (True,):  # a store made before the change ledger, not yet re-initialised
                return []
            cur.execute(
                self._sql(
                    "SELECT doc FROM {s}.changes WHERE changed_at >= COALESCE(%s::date, '-infinity') "
                    "AND (%s::text IS NULL OR recordset_id = %s) "
                    "ORDER BY changed_at, harvest_date, recordset_id"
                ),
                (since, recordset_id, recordset_id),
            )
            return [doc for (doc,) in cur]

    def _update_totals(self, cur: Any, day: date, old: SummaryTexts, new: SummaryTexts) -> None:
        """Swap the day's old contribution to each recordset's totals for its new one, a chunk of
        recordsets at a time: every totals document of a wide day at once (12.8 MB of JSON, parsed,
        merged and sent) took collect-stats from 94 MB to 136 MB (issue 18).

        Recordsets whose totals list the day without a document of it are taken too: their
        totals count something that is gone (a document deleted behind the store's back)."""
        cur.execute(
            # ISO dates compare as text: a candidate per totals whose range of days covers the day.
            self._sql(
                "SELECT recordset_id FROM {s}.totals "
                "WHERE doc->>'first_harvest_date' <= %(day)s AND doc->>'last_harvest_date' >= %(day)s"
            ),
            {"day": day.isoformat()},
        )
        affected = sorted(old.keys() | new.keys() | {rs for (rs,) in cur})
        for start in range(0, len(affected), TOTALS_CHUNK):
            self._update_totals_of(cur, day, affected[start : start + TOTALS_CHUNK], old, new)

    def _update_totals_of(
        self, cur: Any, day: date, recordsets: list[str], old: SummaryTexts, new: SummaryTexts
    ) -> None:
        # FOR UPDATE locks only rows that exist: create the missing ones first, or two days publishing a
        # new recordset at once would both start from nothing and the later write would drop the other.
        # Rows are created and locked in a fixed order (chunks in order), so parallel days cannot
        # deadlock.
        psycopg2.extras.execute_values(
            cur,
            self._sql("INSERT INTO {s}.totals (recordset_id, doc) VALUES %s ON CONFLICT DO NOTHING"),
            [(rs, compact(Totals(rs).to_doc())) for rs in recordsets],
            page_size=1000,
        )
        cur.execute(
            self._sql(
                "SELECT recordset_id, doc FROM {s}.totals WHERE recordset_id = ANY(%s) "
                "ORDER BY recordset_id FOR UPDATE"
            ),
            (recordsets,),
        )
        current = {rs: Totals.from_doc(doc) for rs, doc in cur}
        merged: dict[str, Totals] = {}
        untrusted = []
        for rs in recordsets:
            totals = current.get(rs, Totals(rs))
            swapped = replace_day(totals, day, old.get(rs), new.get(rs))
            if swapped is None:
                untrusted.append(rs)
            elif swapped is not totals or totals.empty:
                merged[rs] = swapped
        # A recordset without totals is new, unless its totals were deleted: then it has documents
        # of other days, which the totals must hold too.
        cur.execute(
            self._sql(
                "SELECT DISTINCT recordset_id FROM {s}.daily "
                "WHERE recordset_id = ANY(%s) AND harvest_date <> %s"
            ),
            ([rs for rs in recordsets if current.get(rs, Totals(rs)).empty and rs not in untrusted], day),
        )
        untrusted += [rs for (rs,) in cur]
        if untrusted:
            # Totals that disagree with the documents are summed again from them: the table holds
            # the day's new documents already, so this is what they must be.
            cur.execute(
                self._sql(
                    "SELECT recordset_id, harvest_date, summary::text FROM {s}.daily "
                    "WHERE recordset_id = ANY(%s) ORDER BY recordset_id, harvest_date"
                ),
                (untrusted,),
            )
            days: dict[str, list[tuple[date, Summary]]] = {rs: [] for rs in untrusted}
            for rs, harvest_date, text in cur:
                days[rs].append((harvest_date, Summary.from_json(json.loads(text))))
            merged.update((rs, rebuilt(rs, days[rs])) for rs in untrusted)
        upserts, deletes = [], []
        for rs, totals in merged.items():
            if totals.empty:
                deletes.append(rs)
            else:
                upserts.append((rs, compact(totals.to_doc())))
        psycopg2.extras.execute_values(
            cur,
            self._sql(
                "INSERT INTO {s}.totals (recordset_id, doc) VALUES %s "
                "ON CONFLICT (recordset_id) DO UPDATE SET doc = EXCLUDED.doc"
            ),
            upserts,
            page_size=1000,
        )
        if deletes:
            cur.execute(self._sql("DELETE FROM {s}.totals WHERE recordset_id = ANY(%s)"), (deletes,))

    def rewrite_totals(self, documents: Sequence[Document], gone: Sequence[str]) -> None:
        self._require_schema()
        with self._transaction("rewriting totals") as cur:
            psycopg2.extras.execute_values(
                cur,
                self._sql(
                    "INSERT INTO {s}.totals (recordset_id, doc) VALUES %s "
                    "ON CONFLICT (recordset_id) DO UPDATE SET doc = EXCLUDED.doc"
                ),
                [(doc["recordset_id"], compact(doc)) for doc in documents],
                page_size=1000,
            )
            cur.execute(self._sql("DELETE FROM {s}.totals WHERE recordset_id = ANY(%s)"), (list(gone),))

    def _stream(self, template: str, params: Any) -> Iterator[Any]:
        self._require_schema()
        try:
            with self._conn, self._conn.cursor(name="idb_stats_stream") as cur:
                cur.itersize = 2000
                cur.execute(self._sql(template), params)
                yield from cur
        except psycopg2.Error as exc:
            if self._conn.closed:  # the store was closed with the stream left unread: nothing lost
                return
            raise StoreError(f"reading the store failed: {one_line(exc)}") from None

    def export(self, first: date, last: date) -> Iterator[Document]:
        rows = self._stream(
            "SELECT doc::text FROM {s}.daily WHERE harvest_date BETWEEN %s AND %s "
            "ORDER BY harvest_date, recordset_id",
            (first, last),
        )
        return (json.loads(text) for (text,) in rows)

    def publishers(self, first: date, last: date) -> Iterator[Document]:
        rows = self._stream(
            "SELECT doc::text FROM {s}.publishers WHERE harvest_date BETWEEN %s AND %s "
            "ORDER BY harvest_date, publisher_id",
            (first, last),
        )
        return (json.loads(text) for (text,) in rows)

    def totals(self, recordsets: Sequence[str] = ()) -> Iterator[Document]:
        if recordsets:
            rows = self._stream(
                "SELECT doc::text FROM {s}.totals WHERE recordset_id = ANY(%s) ORDER BY recordset_id",
                (list(recordsets),),
            )
        else:
            rows = self._stream("SELECT doc::text FROM {s}.totals ORDER BY recordset_id", None)
        return (json.loads(text) for (text,) in rows)

    def completed_days(self) -> dict[date, dict[str, Any]]:
        if not self._initialized():
            return {}
        with self._transaction("reading completed days") as cur:
            cur.execute(self._sql("SELECT harvest_date, stats FROM {s}.days"))
            return dict(cur.fetchall())

    def held_days(self) -> HeldDays:
        if not self._initialized():
            return HeldDays()
        with self._transaction("reading the days held") as cur:
            cur.execute(self._sql("SELECT harvest_date, count(*) FROM {s}.daily GROUP BY 1"))
            documents = dict(cur.fetchall())
            cur.execute(self._sql("SELECT (doc->'harvest_dates')::text FROM {s}.totals"))
            listed = listed_days(day_ranges(json.loads(text or "[]")) for (text,) in cur)
        return HeldDays(documents, listed)

    def record_run(self, run: RunRecord) -> None:
        self._require_schema()
        with self._transaction("recording the run") as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO {s}.runs (run_id, started_at, doc) VALUES (%s, %s, %s) "
                    "ON CONFLICT (run_id) DO UPDATE SET doc = EXCLUDED.doc"
                ),
                (run.run_id, run.started_at, json.dumps(run.as_dict())),
            )

    def run_lock(self) -> AdvisoryRunLock:
        """An advisory lock in the store's database, keyed by the store's identity (the server's
        name for the database, and the schema); the server frees it if the run dies."""
        return AdvisoryRunLock(self._dsn, self.identity, self)

    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        if not self._initialized():
            return []
        with self._transaction("reading runs") as cur:
            cur.execute(self._sql("SELECT doc FROM {s}.runs ORDER BY started_at DESC LIMIT %s"), (limit,))
            return [doc for (doc,) in cur]

    def last_run(self, command: str) -> dict[str, Any] | None:
        if not self._initialized():
            return None
        with self._transaction("reading runs") as cur:
            cur.execute(
                self._sql(
                    "SELECT doc FROM {s}.runs WHERE doc->>'command' = %s ORDER BY started_at DESC LIMIT 1"
                ),
                (command,),
            )
            row = cur.fetchone()
            return row[0] if row else None

    def write_snapshot(self, snapshot_date: date, documents: Iterable[Document]) -> int:
        self._require_schema()
        written = 0
        copy_sql = self._sql("COPY {s}.api_snapshots (snapshot_date, recordset_id, doc) FROM STDIN")
        with self._transaction("writing the snapshot") as cur:
            cur.execute(self._sql("DELETE FROM {s}.api_snapshots WHERE snapshot_date = %s"), (snapshot_date,))
            buffer = io.StringIO()
            for doc in documents:
                buffer.write(copy_line(snapshot_date.isoformat(), doc["recordset_id"], compact(doc)))
                written += 1
            buffer.seek(0)
            cur.copy_expert(copy_sql, buffer)
        return written

    def snapshots(self) -> dict[date, int]:
        if not self._initialized():
            return {}
        with self._transaction("reading snapshots") as cur:
            cur.execute(self._sql("SELECT snapshot_date, count(*) FROM {s}.api_snapshots GROUP BY 1"))
            return dict(cur.fetchall())

    def series(
        self,
        recordsets: Sequence[str],
        first: date | None,
        last: date | None,
        interval: str,
        by_recordset: bool = True,
    ) -> list[dict[str, Any]]:
        # _query reads only a store whose layout is this version's (_require_schema).
        statement = series_sql(self._schema, FIGURE_NAMES, bool(recordsets), by_recordset)
        return self._query(statement, self._range(recordsets, first, last, interval=interval))

    def top_countries(
        self,
        recordsets: Sequence[str],
        first: date | None,
        last: date | None,
        limit: int,
        by_recordset: bool = False,
    ) -> list[dict[str, Any]]:
        statement = top_countries_sql(self._schema, bool(recordsets), by_recordset)
        rows = self._query(statement, self._range(recordsets, first, last, limit=limit))
        return rows if by_recordset else [{"country": r["country"], "hits": r["hits"]} for r in rows]

    def top_terms(
        self, recordset_id: str, first: date | None, last: date | None, limit: int
    ) -> dict[str, list[dict[str, Any]]]:
        rows = self._query(top_terms_sql(self._schema), self._range([recordset_id], first, last, limit=limit))
        terms: dict[str, list[dict[str, Any]]] = {"items": [], "queries": []}
        for row in rows:
            terms[row["kind"]].append({"term": row["term"], "count": row["count"]})
        return terms

    @staticmethod
    def _range(
        recordsets: Sequence[str], first: date | None, last: date | None, **extra: Any
    ) -> dict[str, Any]:
        return {"rs": list(recordsets), "first": first, "last": last, **extra}

    def _query(self, statement: sql.Composable, params: dict[str, Any]) -> list[dict[str, Any]]:
        self._require_schema()
        with self._transaction("querying") as cur:
            # The planner takes each jsonb_each for 100 rows, so these small queries look huge:
            # left alone it compiles them with JIT (about 2 s each) and scans the whole table
            # with parallel workers instead of reading one recordset's days through its index.
            cur.execute("SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0")
            cur.execute(statement, params)
            names = [column.name for column in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur]  # RealDictCursor is 4x slower

    def close(self) -> None:
        self._conn.close()


def _dsn_identity(dsn: str) -> str:
    """host:port/dbname of a DSN, without credentials."""
    params = psycopg2.extensions.parse_dsn(dsn)
    return f"{params.get('host', '')}:{params.get('port', '5432')}/{params.get('dbname', '')}"
