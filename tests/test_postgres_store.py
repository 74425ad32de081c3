"""What only the PostgreSQL store has: its schema upgrade, its compression."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from helpers import (
    HARVEST,
    MakeConfig,
    assert_consistent,
    collect,
    insert_rows,
    other_store,
    published,
    query,
    reference,
    run,
)
from hostile import HARVEST as HOSTILE_HARVEST
from hostile import collect_day, create_telemetry, insert_raw, store_snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idb_stats.documents import with_every_block
from idb_stats.errors import ExitCode, StoreError
from idb_stats.importing import import_documents
from idb_stats.model import BLOCKS, COUNT_FIELDS, DayStats
from idb_stats.stores import open_store, postgres
from idb_stats.totals import Totals, summarize

# A store as the version before schema 2 made it (how: the file's first lines).
V1_STORE = Path(__file__).parent / "fixtures" / "postgres_store_v1.sql"
V1_DAYS = [date(2020, 2, 18), date(2020, 2, 19)]


def read_side(config: Any, recordsets: list[str]) -> list[Any]:
    store = open_store(config)
    try:
        return [
            store.series(recordsets, None, None, "week"),
            store.series([], HARVEST[1], None, "day", by_recordset=False),
            store.top_countries(recordsets, None, None, 10, by_recordset=True),
            [store.top_terms(rs, None, None, 1000) for rs in recordsets],
        ]
    finally:
        store.close()


@pytest.mark.parametrize("store_kind", ["postgres"])
def test_init_upgrades_a_store_made_before_the_read_columns(make_config: MakeConfig, dsn: str) -> None:
    config, daily = published(make_config, dsn)
    recordsets = sorted({d["recordset_id"] for d in daily})
    expected = read_side(config, recordsets)
    assert expected[0] and expected[2] and any(terms["items"] for terms in expected[3])

    conn = psycopg2.connect(config.store_dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            f"ALTER TABLE {config.store_schema}.daily "
            "DROP COLUMN counts, DROP COLUMN countries, DROP COLUMN terms"
        )
    conn.close()
    with pytest.raises(StoreError, match="older idb-stats: run `idb-stats init`"):
        read_side(config, recordsets)

    store = open_store(config)
    store.init()
    store.init()  # a second init finds the schema current and changes nothing
    store.close()
    assert read_side(config, recordsets) == expected


@pytest.mark.parametrize("store_kind", ["postgres"])
@pytest.mark.parametrize("lz4_offered", [True, False], ids=["lz4", "no-lz4"])
def test_documents_are_compressed_with_lz4_only_where_the_server_offers_it(
    make_config: MakeConfig, dsn: str, lz4_offered: bool
) -> None:
    # A server without lz4 (built without it, or before PostgreSQL 14) does not list it among
    # default_toast_compression's values: shown here by a pg_settings ahead of pg_catalog on the
    # store's search_path. The setting is then left alone and the day is written as before.
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        if cur.fetchone() != (True,):
            pytest.skip("this server has no lz4")
        cur.execute("CREATE SCHEMA older_server")
        cur.execute(
            "CREATE VIEW older_server.pg_settings AS SELECT name, "
            "array_remove(enumvals, 'lz4') AS enumvals FROM pg_catalog.pg_settings"
        )
    conn.close()
    search_path = "" if lz4_offered else " options='-csearch_path=older_server,pg_catalog,public'"
    # A recordset seen with 400 records: a document well beyond the 2 kB that TOAST compresses.
    record_ids = [f"00000002-0000-4000-8000-{i:012d}" for i in range(400)]
    insert_raw(
        create_telemetry(dsn), [("view", "records", None, json.dumps(dict.fromkeys(record_ids, "rs")))]
    )
    config = make_config(**{"store.url": dsn + search_path})
    collect_day(config)
    [(methods,)] = query(
        dsn, f"SELECT array_agg(DISTINCT pg_column_compression(doc)) FROM {config.store_schema}.daily"
    )
    assert methods == (["lz4"] if lz4_offered else ["pglz"])
    assert store_snapshot(config)[0] == reference(dsn, HOSTILE_HARVEST)[0]


@pytest.mark.parametrize("store_kind", ["postgres"])
def test_init_migrates_a_version_1_store_whose_documents_read_the_new_block_as_zeros(
    make_config: MakeConfig, dsn: str
) -> None:
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(V1_STORE.read_text())
    conn.close()
    config = make_config(**{"store.schema": "idb_stats"})
    v1_docs = {
        (d, rs): json.loads(doc)
        for d, rs, doc in query(dsn, "SELECT harvest_date, recordset_id, doc::text FROM idb_stats.daily")
    }
    v1_totals = {
        rs: json.loads(doc) for rs, doc in query(dsn, "SELECT recordset_id, doc::text FROM idb_stats.totals")
    }
    assert v1_docs and all("recordsets" not in doc for doc in v1_docs.values())
    [(length,)] = query(dsn, "SELECT DISTINCT cardinality(counts) FROM idb_stats.daily")
    assert length == 20 < len(COUNT_FIELDS)  # version 1's positional layout, without recordsets.view

    with (
        open_store(config) as store,
        pytest.raises(StoreError, match="older idb-stats: run `idb-stats init`"),
    ):
        store.series([], None, None, "day")
    with open_store(config) as store:
        store.init()
        store.init()  # a second init finds the schema current and changes nothing
        series = store.series([], None, None, "day")
        exported = list(store.export(V1_DAYS[0], V1_DAYS[-1]))
        totals = list(store.totals())

    # Every count is where its name says (nothing shifted); the new block is 0 everywhere.
    assert len(series) == len(v1_docs)
    for row in series:
        summary = summarize(v1_docs[(row["period"], row["recordset_id"])])
        for rt, ty in BLOCKS:
            assert (row[f"{rt}.{ty}.count"], row[f"{rt}.{ty}.total"]) == summary.counts[(rt, ty)]
        assert (row["recordsets.view.count"], row["recordsets.view.total"]) == (0, 0)
    # Old documents stay as written; read through the rules' types, the new block is zeros.
    assert {(date.fromisoformat(d["harvest_date"]), d["recordset_id"]): d for d in exported} == v1_docs
    assert {t["recordset_id"]: t for t in totals} == v1_totals
    assert all(Totals.from_doc(t).summary.counts[("recordsets", "view")] == (0, 0) for t in totals)
    assert query(dsn, "SELECT version, count_fields FROM idb_stats.layout") == [
        (2, [".".join(field) for field in COUNT_FIELDS])
    ]
    # An older idb-stats writing its 20 counts now fails instead of shifting the columns.
    with pytest.raises(psycopg2.IntegrityError, match="daily_counts_layout"):
        query(
            dsn,
            "INSERT INTO idb_stats.daily SELECT '2020-03-01', recordset_id, doc, summary, counts[1:20], "
            "countries, terms FROM idb_stats.daily LIMIT 1",
        )

    # Imported elsewhere (an export of the old documents), they carry the new block as zeros.
    copy = other_store(make_config, "copy")
    import_documents(copy, exported)
    with open_store(copy) as store:
        imported = list(store.export(V1_DAYS[0], V1_DAYS[-1]))
        assert_consistent(imported, list(store.totals()))
    assert imported == [with_every_block(doc) for doc in exported] and imported != exported

    # A new day with page views publishes into the migrated store; totals stay the sum of the days.
    rs = sorted(v1_totals)[0]
    insert_rows(
        dsn,
        [
            (datetime(2020, 2, 19, 10), "view", "recordsets", None, {"country": "US"}, {rs: None}),
            (datetime(2020, 2, 19, 11), "view", "publishers", None, None, {"publisher-1": None}),
            (datetime(2020, 2, 19, 12), "search", "records", None, None, {rs: 3}),
        ],
    )
    collect(config, day=date(2020, 2, 20))
    with open_store(config) as store:
        daily = list(store.export(V1_DAYS[0], date(2020, 2, 20)))
        totals = list(store.totals())
        series = store.series([rs], None, None, "year", by_recordset=False)
        publishers = list(store.publishers(date(2020, 2, 20), date(2020, 2, 20)))
    assert_consistent(daily, totals)
    (new,) = [d for d in daily if d["harvest_date"] == "2020-02-20"]
    assert new["recordsets"]["view"]["count"] == 1 and new["records"]["search"]["total"] == 3
    (year,) = series
    assert year["recordsets.view.count"] == 1
    assert year["records.search.total"] == 3 + v1_totals[rs]["records"]["search"]["total"]
    assert [p["publisher_id"] for p in publishers] == ["publisher-1"]


# A layout an idb-stats without some blocks would have written: the figures of the blocks it
# kept, in any order.
OLDER_LAYOUTS = (
    st.sets(st.sampled_from(BLOCKS), min_size=1, max_size=len(BLOCKS) - 1)
    .map(
        lambda dropped: [
            f"{rt}.{ty}.{f}" for rt, ty in BLOCKS if (rt, ty) not in dropped for f in ("count", "total")
        ]
    )
    .flatmap(st.permutations)
)


def publish_by_day(config: Any, daily: list[dict[str, Any]]) -> None:
    days: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in daily:
        days[doc["harvest_date"]].append(doc)
    with open_store(config) as store:
        store.init()
        for day, docs in sorted(days.items()):
            store.publish_day(DayStats(date.fromisoformat(day), run_id="older"), docs)


@pytest.mark.parametrize("store_kind", ["postgres"])
def test_a_store_written_with_a_layout_missing_a_block_is_refused_until_init_moves_it_by_name(
    make_config: MakeConfig, dsn: str
) -> None:
    _, daily = published(make_config, dsn)
    schemas = itertools.count()

    @settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(layout=OLDER_LAYOUTS)
    def written_with(layout: list[str]) -> None:
        config = other_store(make_config, f"older_{next(schemas)}")
        with pytest.MonkeyPatch.context() as patch:  # this code as a version without those blocks
            patch.setattr(postgres, "FIGURE_NAMES", tuple(layout))
            publish_by_day(config, daily)
        layout_table = f"{config.store_schema}.layout"
        assert query(dsn, f"SELECT version, count_fields FROM {layout_table}") == [(2, layout)]

        with open_store(config) as store:
            for read_or_write in (
                lambda: store.series([], None, None, "day"),
                lambda: store.publish_day(DayStats(date(2020, 3, 1)), []),
            ):
                with pytest.raises(StoreError, match=r"older idb-stats: run `idb-stats init`") as refused:
                    read_or_write()
                assert refused.value.exit_code == ExitCode.STORE_FAILED
            store.init()
            series = store.series([], None, None, "day")
        assert query(dsn, f"SELECT count_fields FROM {layout_table}") == [(list(postgres.FIGURE_NAMES),)]
        # Every figure where its name says, those the older layout lacked computed from the
        # documents' summaries.
        by_key = {(row["period"].isoformat(), row["recordset_id"]): row for row in series}
        assert by_key.keys() == {(doc["harvest_date"], doc["recordset_id"]) for doc in daily}
        for doc in daily:
            row = by_key[(doc["harvest_date"], doc["recordset_id"])]
            figures = postgres.figures_of(summarize(doc))
            assert {name: row[name] for name in postgres.FIGURE_NAMES} == figures

    written_with()


@pytest.mark.parametrize("store_kind", ["postgres"])
@pytest.mark.parametrize(
    "newer",
    ["version = version + 1", "count_fields = count_fields || '{records.future.count}'::text[]"],
    ids=["later-version", "unknown-figure"],
)
def test_a_store_of_a_newer_idb_stats_is_refused_before_init_changes_it(
    make_config: MakeConfig, dsn: str, newer: str
) -> None:
    config, daily = published(make_config, dsn)
    schema = config.store_schema
    query(dsn, f"UPDATE {schema}.layout SET {newer} RETURNING version")
    before = query(dsn, f"SELECT recordset_id, harvest_date, counts FROM {schema}.daily ORDER BY 1, 2")
    layout = query(dsn, f"SELECT version, count_fields FROM {schema}.layout")
    with open_store(config) as store:
        for step in (store.init, lambda: store.series([], None, None, "day")):
            with pytest.raises(StoreError, match=r"newer idb-stats .*: upgrade idb-stats") as refused:
                step()
            assert refused.value.exit_code == ExitCode.STORE_FAILED
    # The operator sees one line saying what to do, and the documented exit code.
    assert config.store_dsn == dsn and schema == "idb_stats"  # what the command below opens
    result = run("init", env={"IDB_STATS_SOURCE_DSN": dsn})
    assert result.returncode == ExitCode.STORE_FAILED
    (line,) = result.stderr.strip().splitlines()
    assert "newer idb-stats" in line and line.endswith("upgrade idb-stats to use this store")
    assert (
        query(dsn, f"SELECT recordset_id, harvest_date, counts FROM {schema}.daily ORDER BY 1, 2") == before
    )
    assert query(dsn, f"SELECT version, count_fields FROM {schema}.layout") == layout
    assert len(before) == len(daily)
