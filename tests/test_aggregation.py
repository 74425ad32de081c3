"""The SQL aggregation of a day equals the plain statement of the rules (idb_stats.rules)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from helpers import insert_rows, random_rows, reference

from idb_stats import source as source_module
from idb_stats.config import load_config
from idb_stats.documents import day_documents
from idb_stats.model import SKIP_REASONS, DayStats
from idb_stats.source import PostgresTelemetrySource

DAY = date(2020, 2, 17)  # events of this calendar day have harvest date 2020-02-18


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit", [0, 2])
@pytest.mark.parametrize("skipped_ids_cap", [50_000, 1], ids=["skip-by-id", "skip-by-rule"])
def test_sql_matches_rules(
    dsn: str, seed: int, limit: int, skipped_ids_cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Few skipped rows are excluded by id; beyond the cap the cell queries re-check the rules.
    monkeypatch.setattr(source_module, "SKIPPED_IDS_CAP", skipped_ids_cap)
    insert_rows(dsn, random_rows(seed, DAY) + random_rows(seed + 100, date(2020, 2, 18), bad=False))
    source = PostgresTelemetrySource(load_config(overrides={"source.dsn": dsn}, environ={}))
    try:
        for harvest in (date(2020, 2, 18), date(2020, 2, 19)):
            expected_docs, expected_report = reference(dsn, harvest, limit)
            stats = DayStats(harvest)
            with source.read_day(harvest) as telemetry:
                report = telemetry.report
                docs = list(day_documents(telemetry, harvest, stats, limit))
            assert docs == expected_docs
            assert report.rows == expected_report.rows
            assert report.as_dict() == expected_report.as_dict()
            assert stats.recordsets == len(expected_docs) > 0
    finally:
        source.close()


def test_every_skip_reason_is_counted_with_examples(dsn: str) -> None:
    insert_rows(dsn, random_rows(1, DAY))
    source = PostgresTelemetrySource(load_config(overrides={"source.dsn": dsn}, environ={}))
    with source.read_day(date(2020, 2, 18)) as telemetry:
        report = telemetry.report
    source.close()
    assert set(report.reasons) == set(SKIP_REASONS)
    assert report.reasons["bad_hit_count"].rows == 4
    assert report.reasons["unknown_record_type"].rows == 2
    assert all(r.example_ids for r in report.reasons.values())


def test_midnight_belongs_to_the_next_harvest_date(dsn: str) -> None:
    from datetime import datetime

    rs = "rs-midnight"
    insert_rows(
        dsn,
        [
            (datetime(2020, 2, 17, 0, 0), "search", "records", None, None, {rs: 1}),
            (datetime(2020, 2, 17, 23, 59, 59, 999999), "search", "records", None, None, {rs: 10}),
            (datetime(2020, 2, 18, 0, 0), "search", "records", None, None, {rs: 100}),
        ],
    )
    source = PostgresTelemetrySource(load_config(overrides={"source.dsn": dsn}, environ={}))
    totals = {}
    for harvest in (date(2020, 2, 18), date(2020, 2, 19)):
        with source.read_day(harvest) as telemetry:
            docs = list(day_documents(telemetry, harvest, DayStats(harvest)))
        totals[harvest] = docs[0]["records"]["search"]["total"]
    source.close()
    assert totals == {date(2020, 2, 18): 11, date(2020, 2, 19): 100}


def test_geocodes_that_would_read_the_same_are_skipped_by_both(dsn: str) -> None:
    # Two geocodes PostgreSQL keeps apart (jsonb numerics are exact) that read as the same object
    # in JSON (both 0.1 as a double) could merge two geocode cells into one. Geocodes of strings
    # only are accepted (bad_geocode_value), so neither path ever sees them.
    from datetime import datetime

    import psycopg2

    rs = "rs-geo"
    insert_rows(
        dsn,
        [
            (datetime(2020, 2, 17, 1), "search", "records", None, {"lat": 0.1}, {rs: 2}),
            (datetime(2020, 2, 17, 2), "search", "records", None, {"lat": 0.1}, {rs: 5}),
            (datetime(2020, 2, 17, 3), "search", "records", None, {"country": "US"}, {rs: 1}),
        ],
    )
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("""UPDATE stats SET ip_geocode = '{"lat": 0.10000000000000001}' WHERE id = 2""")
    conn.close()
    harvest = date(2020, 2, 18)
    expected_docs, expected_report = reference(dsn, harvest)
    source = PostgresTelemetrySource(load_config(overrides={"source.dsn": dsn}, environ={}))
    with source.read_day(harvest) as telemetry:
        report = telemetry.report
        docs = list(day_documents(telemetry, harvest, DayStats(harvest)))
    source.close()
    assert report.as_dict() == expected_report.as_dict()
    assert report.as_dict()["bad_geocode_value"]["example_ids"] == [1, 2]
    assert docs[0]["records"]["search"]["geocodes"] == [{"geo": {"country": "US"}, "count": 1}]
    assert docs == expected_docs


@pytest.mark.parametrize("shape", ["today", "wide"])
def test_sql_matches_rules_on_every_shape_of_day(dsn: str, shape: str) -> None:
    # The benchmark's shapes of day, small: on the wide one a search hits many recordsets, pages
    # mix recordsets and thousands of geocodes each make a cell of their own.
    import psycopg2

    from idb_stats import synthetic

    spec = synthetic.Spec(
        first_day=date(2020, 2, 17), days=1, rows_per_day=1_500, shape=synthetic.SHAPES[shape]
    )
    conn = psycopg2.connect(dsn)
    synthetic.load(conn, spec)
    conn.close()
    harvest = date(2020, 2, 18)
    expected_docs, _ = reference(dsn, harvest)
    source = PostgresTelemetrySource(load_config(overrides={"source.dsn": dsn}, environ={}))
    with source.read_day(harvest) as telemetry:
        docs = list(day_documents(telemetry, harvest, DayStats(harvest)))
    source.close()
    geocodes = {
        json.dumps(g["geo"]) for d in docs for block in d["records"].values() for g in block["geocodes"]
    }
    assert len(geocodes) > (500 if shape == "wide" else 3)
    assert docs == expected_docs
