"""Damage done to a store behind idb-stats' back, as a partial restore, lost shards, a manual delete
or a hand edit would: through the store's own client (SQL, REST), never through idb-stats."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import psycopg2

from idb_stats.config import Config
from idb_stats.documents import daily_document_id
from idb_stats.stores import open_store

Doc = dict[str, Any]


class RawStore:
    """One store, written as its own client would: rows and documents, no idb-stats logic."""

    def __init__(self, config: Config):
        self.config = config
        self.kind = config.store

    @contextmanager
    def _sql(self) -> Iterator[Any]:
        conn = psycopg2.connect(self.config.store_dsn)
        try:
            with conn, conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def _table(self, name: str) -> str:
        return f'"{self.config.store_schema}".{name}'

    def _http(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = ()) -> Any:
        store: Any = open_store(self.config)
        try:
            return store.http.request(
                method, path, body, params={"refresh": "true"} if method != "GET" else None, ok=ok
            )
        finally:
            store.close()

    def delete_document(self, recordset_id: str, day: date) -> None:
        if self.kind == "postgres":
            with self._sql() as cur:
                cur.execute(
                    f"DELETE FROM {self._table('daily')} WHERE harvest_date = %s AND recordset_id = %s",
                    (day, recordset_id),
                )
            return
        self._http(
            "DELETE", f"/{self.config.daily_index}/_doc/{daily_document_id(recordset_id, day)}", ok=(404,)
        )

    def copy_document(self, recordset_id: str, source_day: date, day: date) -> None:
        """A recordset's document of one day written again as of another day (an extra document
        that no totals count)."""
        if self.kind == "postgres":
            with self._sql() as cur:
                cur.execute(
                    f"INSERT INTO {self._table('daily')} "
                    "SELECT %(day)s, recordset_id, "
                    "jsonb_set(doc::jsonb, '{harvest_date}', to_jsonb(%(day)s::text))::json, "
                    f"summary, counts, countries, terms FROM {self._table('daily')} "
                    "WHERE harvest_date = %(source)s AND recordset_id = %(rs)s",
                    {"day": day.isoformat(), "source": source_day, "rs": recordset_id},
                )
            return
        index = self.config.daily_index
        doc = self._http("GET", f"/{index}/_doc/{daily_document_id(recordset_id, source_day)}")["_source"]
        doc["harvest_date"] = day.isoformat()
        self._http("PUT", f"/{index}/_doc/{daily_document_id(recordset_id, day)}", doc)

    def change_document(self, recordset_id: str, day: date, change: Callable[[Doc], None]) -> None:
        """Edit a daily document's JSON (the PostgreSQL store's read columns are left as they were)."""
        if self.kind == "postgres":
            with self._sql() as cur:
                where = "WHERE harvest_date = %s AND recordset_id = %s"
                cur.execute(f"SELECT doc FROM {self._table('daily')} {where}", (day, recordset_id))
                (doc,) = cur.fetchone()
                change(doc)
                cur.execute(
                    f"UPDATE {self._table('daily')} SET doc = %s {where}",
                    (json.dumps(doc), day, recordset_id),
                )
            return
        path = f"/{self.config.daily_index}/_doc/{daily_document_id(recordset_id, day)}"
        doc = self._http("GET", path)["_source"]
        change(doc)
        self._http("PUT", path, doc)

    def delete_marker(self, day: date) -> None:
        if self.kind == "postgres":
            with self._sql() as cur:
                cur.execute(f"DELETE FROM {self._table('days')} WHERE harvest_date = %s", (day,))
            return
        self._http("DELETE", f"/{self.config.runs_index}/_doc/day-{day}", ok=(404,))

    def delete_totals(self, recordset_id: str) -> None:
        if self.kind == "postgres":
            with self._sql() as cur:
                cur.execute(f"DELETE FROM {self._table('totals')} WHERE recordset_id = %s", (recordset_id,))
            return
        self._http("DELETE", f"/{self.config.totals_index}/_doc/{recordset_id}", ok=(404,))

    def change_totals(self, recordset_id: str, change: Callable[[Doc], None]) -> None:
        """Edit a totals document's JSON; nothing when the recordset has none."""
        if self.kind == "postgres":
            with self._sql() as cur:
                cur.execute(
                    f"SELECT doc FROM {self._table('totals')} WHERE recordset_id = %s", (recordset_id,)
                )
                row = cur.fetchone()
                if row is None:
                    return
                change(row[0])
                cur.execute(
                    f"UPDATE {self._table('totals')} SET doc = %s WHERE recordset_id = %s",
                    (json.dumps(row[0]), recordset_id),
                )
            return
        path = f"/{self.config.totals_index}/_doc/{recordset_id}"
        found = self._http("GET", path, ok=(404,))
        if found:
            doc = found["_source"]
            change(doc)
            self._http("PUT", path, doc)


def config_toml(config: Config) -> str:
    """A configuration file pointing the CLI at this store (JSON strings are TOML strings)."""
    lines = [
        "[source]",
        f"dsn = {json.dumps(config.source_dsn)}",
        "[store]",
        f"kind = {json.dumps(config.store)}",
    ]
    if config.store == "postgres":
        lines.append(f"schema = {json.dumps(config.store_schema)}")
    else:
        lines += [f"url = {json.dumps(config.store_url)}"] + [
            f"{name} = {json.dumps(getattr(config, name))}"
            for name in ("daily_index", "totals_index", "runs_index", "api_index")
        ]
    lines += ["[collect]", f"lock_timeout = {config.lock_timeout}"]
    return "\n".join(lines) + "\n"
