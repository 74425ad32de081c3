"""`check-config --connect`: reach every configured endpoint and check what the commands need.

Each check says what it found in one line; every one runs, so an operator sees all failures at
once. Nothing is written: privileges are read with PostgreSQL's has_*_privilege functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
from psycopg2 import sql

from . import sqltext
from .config import Config
from .errors import ConfigError, SourceUnreachable, StoreError, StoreUnreachable
from .pg import connect
from .secrets import redact
from .stores import open_store

# What the PostgreSQL store keeps (stores/postgres.py SCHEMA_SQL) and what publishing does to it.
STORE_TABLES = ("daily", "totals", "days", "runs", "api_snapshots")
STORE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


@dataclass(frozen=True)
class Check:
    endpoint: str
    ok: bool
    detail: str


def run_all(config: Config) -> list[Check]:
    results = _postgres_tables(
        "telemetry database (source.dsn)",
        config.source_dsn,
        "source.dsn",
        {config.stats_table: "source.stats_table", config.queries_table: "source.queries_table"},
        utf8=True,
    )
    results += _postgres_store(config) if config.store == "postgres" else _search_store(config)
    if config.api_dsn:
        results += _postgres_tables(
            "ingest database (api.dsn)",
            config.api_dsn,
            "api.dsn",
            # uuids for api-stats; recordsets and publishers for names and publisher roll-ups.
            {
                config.uuids_table: "api.uuids_table",
                config.recordsets_table: "api.recordsets_table",
                config.publishers_table: "api.publishers_table",
            },
        )
    return results


@contextlib.contextmanager
def _session(dsn: str, purpose: str) -> Iterator[Any]:
    conn = connect(dsn, purpose)
    try:
        conn.set_session(readonly=True, autocommit=True)
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def _value(cur: Any, sql: str, *params: Any) -> Any:
    cur.execute(sql, params)
    return cur.fetchone()[0]


def _failed(endpoint: str, exc: Exception, setting: str) -> Check:
    """An endpoint that could not be reached or queried: the rest of its checks cannot run.
    Unreachable, the hint names the setting that says where (its value may hold a password, so
    only its name)."""
    if isinstance(exc, (SourceUnreachable, StoreUnreachable)):
        return Check(endpoint, False, f"{exc} (is the server running? are host and port right in {setting}?)")
    return Check(endpoint, False, f"check failed: {str(exc).strip().splitlines()[0]}")


def _postgres_tables(
    endpoint: str, dsn: str, setting: str, tables: dict[str, str], utf8: bool = False
) -> list[Check]:
    """Reach a database the commands only read, and check SELECT on each of its tables (and, with
    utf8, its encoding: collect-stats reads telemetry from UTF8 databases only)."""
    try:
        with _session(dsn, endpoint.split(" database")[0]) as cur:
            cur.execute("SELECT current_user, current_database(), current_setting('server_encoding')")
            role, database, encoding = cur.fetchone()
            results = [Check(endpoint, True, f"connected to {database} as {role}")]
            if utf8 and encoding != "UTF8":
                results.append(
                    Check(endpoint, False, f"{database} is encoded in {encoding}; idb-stats reads UTF8 only")
                )
            for table, setting in tables.items():
                quoted = sqltext.table(table).as_string(
                    cur.connection
                )  # case and reserved words kept, as read
                if not _value(cur, "SELECT to_regclass(%s) IS NOT NULL", quoted):
                    results.append(
                        Check(
                            endpoint,
                            False,
                            f"no table {table} in {database} ({setting}); is this the right database?",
                        )
                    )
                elif not _value(cur, "SELECT has_table_privilege(%s, 'SELECT')", quoted):
                    results.append(
                        Check(
                            endpoint, False, f"{role} may not read {table}: GRANT SELECT ON {table} TO {role}"
                        )
                    )
                else:
                    results.append(Check(endpoint, True, f"{table}: SELECT granted"))
            return results
    except (SourceUnreachable, psycopg2.Error) as exc:
        return [_failed(endpoint, exc, setting)]


def _postgres_store(config: Config) -> list[Check]:
    """The store's role runs init (CREATE SCHEMA/TABLE/INDEX IF NOT EXISTS) before every write,
    which PostgreSQL checks even when everything exists: CREATE on the database and the schema,
    ownership of the daily table (its index); then it reads, inserts, updates and deletes."""
    schema = config.store_schema
    endpoint = f"statistics store (postgres, schema {schema})"
    try:
        with _session(config.store_dsn, "statistics store") as cur:
            cur.execute("SELECT current_user, current_database()")
            role, database = cur.fetchone()
            results = [Check(endpoint, True, f"connected to {database} as {role}")]

            def need(ok: bool, granted: str, missing: str) -> None:
                results.append(Check(endpoint, ok, granted if ok else missing))

            need(
                _value(cur, "SELECT has_database_privilege(current_database(), 'CREATE')"),
                f"CREATE on database {database} granted",
                f"{role} lacks CREATE on database {database} (init runs CREATE SCHEMA IF NOT EXISTS): "
                f"GRANT CREATE ON DATABASE {database} TO {role}",
            )
            if not _value(cur, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", schema):
                results.append(Check(endpoint, True, f"schema {schema} not created yet (init creates it)"))
                return results
            for privilege in ("USAGE", "CREATE"):
                need(
                    _value(cur, "SELECT has_schema_privilege(%s, %s)", schema, privilege),
                    f"{privilege} on schema {schema} granted",
                    f"{role} lacks {privilege} on schema {schema}: "
                    f"GRANT {privilege} ON SCHEMA {schema} TO {role}",
                )
            for table in STORE_TABLES:
                qualified = f"{schema}.{table}"  # as the operator spells it, in messages
                regclass = sql.Identifier(schema, table).as_string(cur.connection)  # as the store reads it
                if not _value(cur, "SELECT to_regclass(%s) IS NOT NULL", regclass):
                    continue  # init creates it
                if table == "daily":
                    need(
                        _value(
                            cur,
                            "SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = %s::regclass",
                            regclass,
                        ),
                        f"{qualified} owned",
                        f"{role} does not own {qualified} "
                        "(init's CREATE INDEX IF NOT EXISTS needs the owner): "
                        f"ALTER TABLE {qualified} OWNER TO {role}",
                    )
                lacking = [
                    p
                    for p in STORE_PRIVILEGES
                    if not _value(cur, "SELECT has_table_privilege(%s, %s)", regclass, p)
                ]
                need(
                    not lacking,
                    f"{qualified}: {', '.join(STORE_PRIVILEGES)} granted",
                    f"{role} lacks {', '.join(lacking)} on {qualified}: "
                    f"GRANT {', '.join(lacking)} ON {qualified} TO {role}",
                )
            return results
    except (SourceUnreachable, psycopg2.Error) as exc:
        setting = "store.url" if config.store_url else "source.dsn (store.url is not set)"
        return [_failed(endpoint, exc, setting)]


def _search_store(config: Config) -> list[Check]:
    """An Elasticsearch/OpenSearch store answers an authenticated read of its runs index."""
    endpoint = f"statistics store ({config.store}, {redact(config.store_url)})"
    # One attempt, a short wait: a check should not spend the publish path's retries.
    quick = dataclasses.replace(config, bulk_max_retries=0, request_timeout=min(config.request_timeout, 10.0))
    try:
        with open_store(quick) as store:
            days = store.completed_days()
    except ConfigError as exc:  # its client is not installed
        return [Check(endpoint, False, "; ".join(exc.problems))]
    except StoreUnreachable as exc:
        return [_failed(endpoint, exc, "store.url")]
    except StoreError as exc:
        return [Check(endpoint, False, str(exc))]
    return [Check(endpoint, True, f"reachable; complete days recorded: {len(days)}")]
