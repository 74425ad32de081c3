"""Day one on the portal's live cluster: adopt from Elasticsearch 2.4 as the original left it, then
the search API's four query kinds through the one name `stats`.

The live cluster is Elasticsearch 2.4; none can run here, so the original's index lives on
es2_server.Es2Server, an HTTP server speaking the 2.x wire format for exactly the requests adopt
sends (see its docstring). The target is osmem (OpenSearch) and, for the search API's queries,
also the Elasticsearch client's path through the proxy.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from es2_server import Es2Server
from helpers import (
    HARVEST,
    MakeConfig,
    assert_consistent,
    collect,
    execute,
    insert_rows,
    load_week,
    other_store,
    query,
    random_rows,
    run,
)

from idb_stats import status as store_status
from idb_stats import verify
from idb_stats.adopt import adopt
from idb_stats.config import Config
from idb_stats.model import BLOCKS, COUNTER_KEY
from idb_stats.source import PostgresTelemetrySource
from idb_stats.stores import open_store

SEARCH = pytest.mark.parametrize("store_kind", ["opensearch", "elasticsearch"], indirect=True)
LEGACY_INDEX, LEGACY_ALIAS = "stats-2.6.0", "stats"


@pytest.fixture
def es2() -> Iterator[Es2Server]:
    server = Es2Server()
    yield server
    server.close()


def as_original(doc: dict[str, Any]) -> dict[str, Any]:
    """A document of ours as the original wrote it: counts as doubles."""
    out = copy.deepcopy(doc)
    for rt, ty in BLOCKS:
        block = out[rt][ty]
        block["count"], block["total"] = float(block["count"]), float(block["total"])
    return out


def export(config: Config, first: date = HARVEST[0], last: date = HARVEST[-1]) -> list[dict[str, Any]]:
    with open_store(config) as store:
        return list(store.export(first, last))


class Deployment:
    """The original's `stats` (an alias of `stats-2.6.0`, as the search API's recorded answers
    show) on the 2.x server: daily documents of type `search` for HARVEST[0], [1] and [3] (the
    original failed to write [2], whose telemetry exists), a re-run duplicate, record counts of
    type `api` (two runs on one day), and an ingestion `digest` document."""

    def __init__(self, es2: Es2Server, truth: list[dict[str, Any]]):
        cluster = es2.cluster
        self.days = [HARVEST[0], HARVEST[1], HARVEST[3]]
        # The original never wrote COUNTER-style figures: its documents (and what adopt makes of
        # them) have no counter block.
        kept = [
            {k: v for k, v in d.items() if k != COUNTER_KEY}
            for d in truth
            if date.fromisoformat(d["harvest_date"]) in self.days
        ]
        self.expected = copy.deepcopy(kept)  # what adopt --duplicates keep-last must make of it
        for doc in kept:
            cluster.add(LEGACY_INDEX, "search", as_original(doc))
        first_of_day1 = next(d for d in kept if d["harvest_date"] == HARVEST[1].isoformat())
        rerun = as_original(first_of_day1)
        rerun["records"]["search"]["count"] += 3.0
        cluster.add(LEGACY_INDEX, "search", rerun)  # written later: keep-last keeps it
        self.expected[kept.index(first_of_day1)]["records"]["search"]["count"] += 3
        self.duplicate = first_of_day1["recordset_id"]
        recordsets = sorted({d["recordset_id"] for d in kept})
        # api-stats ran at 01:00 UTC; on HARVEST[3] twice, the second run counting more records.
        self.api: list[dict[str, Any]] = []
        for day, run_at, grow in (
            (HARVEST[0], "01:00:05.706200", 0),
            (HARVEST[3], "01:00:07.100000", 0),
            (HARVEST[3], "13:30:00.000001", 5),
        ):
            for i, rs in enumerate(recordsets):
                doc = {
                    "recordset_id": rs,
                    "records_count": 1000 * (i + 1) + grow,
                    "mediarecords_count": 10 * i + grow,
                    "harvest_date": f"{day}T{run_at}",
                }
                cluster.add(LEGACY_INDEX, "api", doc)
                self.api.append(doc)
        cluster.add(
            LEGACY_INDEX,
            "digest",
            {
                "recordset_id": recordsets[0],
                "records_count": 5,
                "mediarecords_count": 0,
                "harvest_date": f"{HARVEST[1]}T17:00:51.536832",
                "filemd5": "x",
            },
        )
        cluster.aliases[LEGACY_ALIAS] = LEGACY_INDEX
        self.recordsets = recordsets
        self.documents = len(kept) + 1 + len(self.api) + 1


@pytest.fixture
def deployment(make_config: MakeConfig, dsn: str, es2: Es2Server) -> Deployment:
    load_week(dsn)
    scratch = other_store(make_config, "truth")
    collect(scratch, first=HARVEST[0], last=HARVEST[-1])
    return Deployment(es2, export(scratch))


def legacy_of(config: Config, es2: Es2Server) -> Config:
    return replace(config, store_url=es2.url, daily_index=LEGACY_ALIAS)


@SEARCH
def test_adopt_from_elasticsearch_2_dry_run_counts_what_the_run_writes(
    make_config: MakeConfig, es2: Es2Server, deployment: Deployment
) -> None:
    config = make_config()
    target = f"{config.daily_index}-v2"
    plan = adopt(config, legacy_of(config, es2), target, "keep-last", dry_run=True).as_dict()
    assert es2.cluster.scrolls == {}  # every scroll cleared
    done = adopt(config, legacy_of(config, es2), target, "keep-last", dry_run=False).as_dict()
    assert plan["server_version"] == done["server_version"] == "elasticsearch 2.4.6"
    counted = (
        "documents",
        "days",
        "written",
        "size_snapshots",
        "superseded_snapshots",
        "rejected",
        "duplicate_recordset_days",
    )
    assert {k: plan[k] for k in counted} == {k: done[k] for k in counted}
    assert done["documents"] == deployment.documents
    assert done["written"] == len(deployment.expected)
    # Two snapshot days: HARVEST[0] and HARVEST[3] (its first run superseded by the second).
    assert done["size_snapshots"] == 2 * len(deployment.recordsets)
    assert done["superseded_snapshots"] == len(deployment.recordsets)
    assert done["rejected"] == {"type_digest": 1}
    assert done["alias_switched"]
    # Only the 2.x dialect was spoken: the server refuses calendar_interval and seq_no_primary_term.
    sent = json.dumps([body for _, _, body in es2.cluster.requests])
    assert "calendar_interval" not in sent and "seq_no_primary_term" not in sent
    assert all(method in ("GET", "HEAD", "POST", "DELETE") for method, _, _ in es2.cluster.requests)
    daily = export(config)
    assert daily == sorted(deployment.expected, key=lambda d: (d["harvest_date"], d["recordset_id"]))
    with open_store(config) as store:
        totals = list(store.totals())
        assert store.snapshots() == {
            HARVEST[0]: len(deployment.recordsets),
            HARVEST[3]: len(deployment.recordsets),
        }
        assert store.index_state(config.daily_index) == ("alias", sorted([target, config.api_index]))  # type: ignore[attr-defined]
    assert_consistent(daily, totals)
    # Re-running finds the work done; the original's cluster is only read.
    again = adopt(config, legacy_of(config, es2), target, "keep-last", dry_run=False)
    assert again.already_adopted == deployment.days and again.alias_switched and not again.days
    assert export(config) == daily
    assert len(es2.cluster.indexes[LEGACY_INDEX]) == deployment.documents


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_adopt_from_elasticsearch_2_into_postgres_with_the_cli(
    make_config: MakeConfig, es2: Es2Server, deployment: Deployment, tmp_path: Any
) -> None:
    config = make_config()
    env = {"IDB_STATS_SOURCE_DSN": config.source_dsn or "", "IDB_STATS_STORE": "postgres"}
    toml = tmp_path / "config.toml"
    toml.write_text(f'[store]\nschema = "{config.store_schema}"\n')
    args = ("adopt", "--config", str(toml), "--from-url", es2.url, "--index", LEGACY_ALIAS)
    refused = run(*args, env=env)
    assert refused.returncode == 6 and deployment.duplicate in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    plan = run(*args, "--dry-run", "--duplicates", "keep-last", env=env)
    assert plan.returncode == 0, plan.stderr
    done = run(*args, "--duplicates", "keep-last", env=env)
    assert done.returncode == 0, done.stderr
    planned, written = json.loads(plan.stdout), json.loads(done.stdout)
    assert planned["written"] == written["written"] == len(deployment.expected)
    assert planned["size_snapshots"] == written["size_snapshots"] == 2 * len(deployment.recordsets)
    assert export(config) == sorted(deployment.expected, key=lambda d: (d["harvest_date"], d["recordset_id"]))
    # The day the original failed to write, inside the adopted range, with telemetry rows: a gap.
    info = store_status.status(config)
    assert info.adopted_gaps == [HARVEST[2]] and info.as_dict()["adopted_gaps"] == [HARVEST[2].isoformat()]
    shown = run("status", "--config", str(toml), env=env)
    assert f"gaps in adopted days:  {HARVEST[2]} (telemetry exists" in shown.stdout, shown.stderr
    # Collected, the gap is gone.
    assert run("collect-stats", "--config", str(toml), "-d", str(HARVEST[2]), env=env).returncode == 0
    assert store_status.status(config).adopted_gaps == []


# --- the search API's four query kinds -----------------------------------------------------------

# The sums of t=search and t=fields (idigbio-search-api, controllers/summary.js `stats`).
USAGE_SUMS = {
    "seen": "records.seen.total",
    "search": "records.search.total",
    "download": "records.download.total",
    "viewed_records": "records.view.total",
    "viewed_media": "mediarecords.view.total",
    "search_count": "records.search.count",
    "download_count": "records.download.count",
}
COUNT_MAXES = {"records": "records_count", "mediarecords": "mediarecords_count"}
# The `type` value each query kind filters on once mapping types are gone.
TYPE_OF_KIND = {"search": "search", "fields": "search", "api": "api", "digest": "api"}


def search_api_body(
    kind: str, min_date: str, max_date: str, interval: str, recordset: str | None, inverted: bool
) -> dict[str, Any]:
    """The body the search API sends to /stats/{kind}/_search on Elasticsearch 2 (size stays 0)."""
    rf = {"harvest_date": {"gte": min_date, "lte": max_date}}
    filt: dict[str, Any] = {"range": rf}
    if recordset:
        filt = {"and": [{"range": rf}, {"term": {"recordset_id": recordset}}]}
    if kind in ("fields", "search"):
        internal = {name: {"sum": {"field": field}} for name, field in USAGE_SUMS.items()}
    else:
        internal = {name: {"max": {"field": field}} for name, field in COUNT_MAXES.items()}
    histogram = {"field": "harvest_date", "interval": interval, "format": "yyyy-MM-dd"}
    terms = {"field": "recordset_id", "size": 10000}
    if inverted:
        aggs = {"rs": {"terms": terms, "aggs": {"dh": {"date_histogram": histogram, "aggs": internal}}}}
    else:
        aggs = {"dh": {"date_histogram": histogram, "aggs": {"rs": {"terms": terms, "aggs": internal}}}}
    return {"size": 0, "aggs": {"fdh": {"filter": filt, "aggs": aggs}}}


def translated(kind: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Elasticsearch's recipe for removing mapping types, and the two 2.x-isms later versions
    refuse: the type leaves the URL and enters as a `term` filter on `type`; `and` becomes
    `bool.filter`; `interval` becomes `calendar_interval`. The path is relative to the index."""
    out = copy.deepcopy(body)
    fdh = out["aggs"]["fdh"]
    clauses = fdh["filter"]["and"] if "and" in fdh["filter"] else [fdh["filter"]]
    fdh["filter"] = {"bool": {"filter": [{"term": {"type": TYPE_OF_KIND[kind]}}, *clauses]}}
    text = json.dumps(out).replace('"interval":', '"calendar_interval":')
    return "/_search", json.loads(text)


def cells(response: dict[str, Any], inverted: bool) -> dict[tuple[str, str, str], int]:
    """{(period, recordset, aggregation): value} as stats_hist_formatter reads the answer."""
    fdh = response["aggregations"]["fdh"]
    pairs = (
        [(dh["key_as_string"], rs["key"], dh) for rs in fdh["rs"]["buckets"] for dh in rs["dh"]["buckets"]]
        if inverted
        else [
            (dh["key_as_string"], rs["key"], rs) for dh in fdh["dh"]["buckets"] for rs in dh["rs"]["buckets"]
        ]
    )
    out = {}
    for period, rs, bucket in pairs:
        if bucket["doc_count"] == 0:
            # An empty period between a recordset's first and last (min_doc_count 0, as on 2.x):
            # zeros on both sides.
            assert all(
                int(v["value"] or 0) == 0 for v in bucket.values() if isinstance(v, dict) and "value" in v
            )
            continue
        for name, value in bucket.items():
            if isinstance(value, dict) and "value" in value:
                out[(period, rs, name)] = int(value["value"] or 0)
    return out


def period_of(day: str, interval: str) -> str:
    return {"day": day, "month": day[:7] + "-01", "year": day[:4] + "-01-01"}[interval]


def original_numbers(
    kind: str,
    daily: list[dict[str, Any]],
    api: list[dict[str, Any]],
    min_day: str,
    interval: str,
    recordset: str | None,
) -> dict[tuple[str, str, str], int]:
    """What the original answers: sums of the day's documents per (period, recordset), or the
    largest record count of every api-stats run in the period."""
    out: dict[tuple[str, str, str], int] = {}
    if kind in ("search", "fields"):
        for doc in daily:
            if doc["harvest_date"] < min_day or (recordset and doc["recordset_id"] != recordset):
                continue
            for name, path in USAGE_SUMS.items():
                rt, ty, field = path.split(".")
                key = (period_of(doc["harvest_date"], interval), doc["recordset_id"], name)
                out[key] = out.get(key, 0) + int(doc[rt][ty][field])
    else:
        for doc in api:
            if doc["harvest_date"][:10] < min_day or (recordset and doc["recordset_id"] != recordset):
                continue
            for name, field in COUNT_MAXES.items():
                key = (period_of(doc["harvest_date"][:10], interval), doc["recordset_id"], name)
                out[key] = max(out.get(key, 0), int(doc[field]))
    return out


@SEARCH
def test_the_portals_four_query_kinds_on_stats_after_adopt_and_collection(
    make_config: MakeConfig, dsn: str, es2: Es2Server, deployment: Deployment
) -> None:
    config = make_config()
    target = f"{config.daily_index}-v2"
    adopt(config, legacy_of(config, es2), target, "keep-last", dry_run=False)
    daily = sorted(deployment.expected, key=lambda d: (d["harvest_date"], d["recordset_id"]))
    api = list(deployment.api)

    def check(stage: str) -> int:
        checked = 0
        with open_store(config) as store:
            for kind in ("search", "fields", "api", "digest"):
                for interval, min_date in (
                    ("day", "2014-01-01"),
                    ("month", "2020-02-19T04:00:00.000Z"),
                    ("year", "2014-01-01"),
                ):
                    for recordset in (None, deployment.recordsets[1]):
                        for inverted in (False, True):
                            body = search_api_body(kind, min_date, "now", interval, recordset, inverted)
                            path, sent = translated(kind, body)
                            response = store.http.request("POST", f"/{config.daily_index}{path}", sent)  # type: ignore[attr-defined]
                            # A bound with a time is a moment: 2020-02-19T04:00Z leaves out 2020-02-19 itself.
                            min_day = "2020-02-20" if "T" in min_date else min_date
                            want = original_numbers(kind, daily, api, min_day, interval, recordset)
                            assert cells(response, inverted) == want, (
                                stage,
                                kind,
                                interval,
                                recordset,
                                inverted,
                            )
                            assert want
                            checked += 1
        return checked

    assert check("adopted") == 48
    # The plain catch-up continues after the last adopted day; api-stats writes that day's snapshot.
    new_day = HARVEST[3] + timedelta(days=1)
    insert_rows(dsn, random_rows(99, new_day - timedelta(days=1), n=80, bad=False))
    collect(config, first=new_day, last=new_day)
    with open_store(config) as store:
        snapshot = [
            {
                "recordset_id": rs,
                "harvest_date": f"{HARVEST[3] + timedelta(days=1)}T01:00:00+00:00",
                "records_count": 7,
                "mediarecords_count": 1,
            }
            for rs in deployment.recordsets
        ]
        store.write_snapshot(HARVEST[3] + timedelta(days=1), iter(snapshot))
    api += snapshot
    collected = export(config, new_day, new_day)
    assert collected
    daily += collected
    assert check("collected") == 48


# --- verify on adopted history ------------------------------------------------------------------


def as_the_original_wrote(doc: dict[str, Any]) -> dict[str, Any]:
    """The original's shape of a document: doubles, `geo: null` for no geocode, lists in its
    dictionaries' order (here: reversed), so entries of equal count sit elsewhere than ours."""
    out = as_original(doc)
    for rt, ty in BLOCKS:
        block = out[rt][ty]
        for entry in block["geocodes"]:
            if entry["geo"] == {}:
                entry["geo"] = None
        for name in ("items", "queries", "geocodes"):
            block[name].reverse()
    return out


@pytest.mark.parametrize("store_kind", ["postgres", "opensearch"], indirect=True)
def test_verify_on_adopted_history_reports_midnight_events_and_repairs_only_named_days(
    make_config: MakeConfig, dsn: str, es2: Es2Server, tmp_path: Any
) -> None:
    load_week(dsn)
    # The original's numbers: its window (date > D-1 AND date < D) leaves out rows stamped at
    # exactly midnight. Collected without them, then they are put back.
    midnight = "date = date_trunc('day', date)"
    execute(dsn, f"CREATE TABLE midnight_rows AS SELECT * FROM stats WHERE {midnight}")
    assert execute(dsn, f"DELETE FROM stats WHERE {midnight}") > 0
    scratch = other_store(make_config, "original")
    collect(scratch, first=HARVEST[0], last=HARVEST[-1])
    original = export(scratch)
    execute(dsn, "INSERT INTO stats SELECT * FROM midnight_rows")
    nulls = sum(e["geo"] == {} for d in original for rt, ty in BLOCKS for e in d[rt][ty]["geocodes"])
    assert nulls > 0  # the case that made position-by-position comparison condemn every day
    # One real difference, on HARVEST[1]: a count the telemetry does not give.
    altered = next(d for d in original if d["harvest_date"] == HARVEST[1].isoformat())
    altered["records"]["seen"]["total"] += 1
    for doc in original:
        es2.cluster.add(LEGACY_INDEX, "search", as_the_original_wrote(doc))
    es2.cluster.aliases[LEGACY_ALIAS] = LEGACY_INDEX
    config = make_config()
    target = f"{config.daily_index}-v2" if config.store != "postgres" else None
    adopt(config, legacy_of(config, es2), target, "keep-last", dry_run=False)

    report = verify.verify(config).report
    outcomes = {d.harvest_date: d.outcome for d in report.days}
    assert outcomes == {
        HARVEST[0]: "midnight_only",
        HARVEST[1]: "differs",
        HARVEST[2]: "midnight_only",
        HARVEST[3]: "midnight_only",
    }
    assert report.differences == 1  # the altered total, and nothing else
    assert all(d.midnight_differences > 0 for d in report.days if d.outcome == "midnight_only")

    # --repair leaves the adopted day alone ...
    before = export(config)
    outcome = verify.verify(config, repair=True)
    assert outcome.adopted_left == [HARVEST[1]] and outcome.repaired_days == []
    assert export(config) == before
    # ... unless it is named: then it holds what the telemetry gives (midnight events included).
    outcome = verify.verify(config, repair=True, include_adopted=frozenset({HARVEST[1]}))
    assert outcome.repaired_days == [HARVEST[1]] and outcome.final.differences == 0
    assert {d.harvest_date: d.outcome for d in outcome.final.days}[HARVEST[1]] == "agrees"


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_verify_command_on_midnight_only_days_exits_0_and_include_adopted_needs_repair(
    make_config: MakeConfig, dsn: str, es2: Es2Server, tmp_path: Any
) -> None:
    load_week(dsn)
    midnight = "date = date_trunc('day', date)"
    execute(dsn, f"CREATE TABLE midnight_rows AS SELECT * FROM stats WHERE {midnight}")
    execute(dsn, f"DELETE FROM stats WHERE {midnight}")
    scratch = other_store(make_config, "original")
    collect(scratch, first=HARVEST[0], last=HARVEST[1])
    for doc in export(scratch):
        es2.cluster.add(LEGACY_INDEX, "search", as_the_original_wrote(doc))
    es2.cluster.aliases[LEGACY_ALIAS] = LEGACY_INDEX
    execute(dsn, "INSERT INTO stats SELECT * FROM midnight_rows")
    config = make_config()
    adopt(config, legacy_of(config, es2), None, "keep-last", dry_run=False)
    env = {"IDB_STATS_SOURCE_DSN": config.source_dsn or "", "IDB_STATS_STORE": "postgres"}
    toml = tmp_path / "config.toml"
    toml.write_text(f'[store]\nschema = "{config.store_schema}"\n')
    checked = run("verify", "--config", str(toml), env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{HARVEST[0]}  midnight_only" in checked.stdout
    assert "differing only by the events at midnight" in checked.stdout
    misuse = run("verify", "--config", str(toml), "--include-adopted", str(HARVEST[0]), env=env)
    assert misuse.returncode == 2 and "add --repair" in misuse.stderr


# --- docs/migrating.md, walked through --------------------------------------------------------

MIGRATING = (Path(__file__).resolve().parent.parent / "docs" / "migrating.md").read_text()


def section(title: str) -> str:
    start = MIGRATING.index(f"## {title}")
    return MIGRATING[start : MIGRATING.index("\n## ", start + 1)]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_migrating_md_gives_the_bodies_the_search_api_needs() -> None:
    printed = [json.loads(b) for b in blocks(section("5. The portal's queries"), "json")]
    default = ("2014-01-01", "now", "year", None, False)
    assert printed[0] == translated("search", search_api_body("search", *default))[1]
    assert printed[0] == translated("fields", search_api_body("fields", *default))[1]
    assert printed[1] == translated("api", search_api_body("api", *default))[1]
    assert printed[1] == translated("digest", search_api_body("digest", *default))[1]
    stats_page = ("2023-11-01T04:00:00.000Z", "now", "month", "<recordset uuid>", True)
    assert (
        printed[2] == translated("fields", search_api_body("fields", *stats_page))[1]["aggs"]["fdh"]["filter"]
    )
    # Section 1 names both of the original's timers.
    assert "idb-interaction-telemetry-aggregator.timer" in section(
        "1."
    ) and "idb-recordset-stats-aggregator.timer" in section("1.")


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_migrating_md_walked_through_on_postgres(
    make_config: MakeConfig, dsn: str, es2: Es2Server, deployment: Deployment, tmp_path: Any
) -> None:
    config = make_config()
    env = {"IDB_STATS_STORE": "postgres"}
    # Section 2's configuration as printed, with this machine's database, and a postgres store.
    (tmp_path / "source-dsn").write_text(dsn)
    (toml_text,) = blocks(section("2. Configure"), "toml")
    assert "[source]" in toml_text
    toml = tmp_path / "config.toml"
    text = (
        toml_text.replace("/etc/idb-stats/source-dsn", str(tmp_path / "source-dsn"))
        .replace('kind = "opensearch"', 'kind = "postgres"')
        .replace('url = "https://search.example.org:9200"', f'schema = "{config.store_schema}"')
    )
    toml.write_text(text)
    checked = run("check-config", "--config", str(toml), env=env)
    assert checked.returncode == 0, checked.stderr
    # Section 3's commands, with the 2.x server's URL.
    commands = [
        line for line in blocks(section("3. Adopt"), "sh")[0].splitlines() if line.startswith("idb-stats")
    ]
    assert len(commands) == 2
    for line in commands:
        args = line.replace("http://esnodec1.example.org:9200", es2.url).split()[1:]
        result = run(*args, "--config", str(toml), env=env)
        assert result.returncode == 0, (line, result.stderr)
    assert export(config) == sorted(deployment.expected, key=lambda d: (d["harvest_date"], d["recordset_id"]))
    # Section 4: status names the gap the original left.
    shown = run("status", "--config", str(toml), env=env)
    assert f"gaps in adopted days:  {HARVEST[2]}" in shown.stdout, shown.stderr
    # The midnight query of "How idb-stats' numbers differ" labels each event's harvest date.
    (midnight_sql,) = blocks(MIGRATING[MIGRATING.index("## How idb-stats") :], "sql")
    labelled = dict(query(dsn, midnight_sql))
    source = PostgresTelemetrySource(config)
    try:
        assert labelled and all(
            len(source.rows_at(day - timedelta(days=1))) == n for day, n in labelled.items()
        )
    finally:
        source.close()


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_adopt_from_url_mistakes_exit_with_one_line_before_any_write(
    make_config: MakeConfig, es2: Es2Server, tmp_path: Any
) -> None:
    config = make_config()
    env = {"IDB_STATS_SOURCE_DSN": config.source_dsn or "", "IDB_STATS_STORE": "postgres"}
    toml = tmp_path / "config.toml"
    toml.write_text(f'[store]\nschema = "{config.store_schema}"\nbulk_max_retries = 1\n')
    base = ("adopt", "--config", str(toml))
    absent = run(*base, "--from-url", es2.url, "--index", "no-such-index", env=env)
    assert absent.returncode == 3 and "there is no index 'no-such-index' to adopt" in absent.stderr
    with_password = run(*base, "--from-url", "http://user:secret@127.0.0.1:9", env=env)
    assert with_password.returncode == 2 and "secret" not in with_password.stderr
    closed = Es2Server()
    closed.close()  # a port nothing listens on any more
    unreachable = run(*base, "--from-url", closed.url, env=env)
    assert unreachable.returncode == 5 and "legacy cluster" in unreachable.stderr, unreachable.stderr
    # A scroll the 2.x server lost half-way (its context expired): the error says so, nothing is adopted.
    for i in range(1500):
        es2.cluster.add(
            LEGACY_INDEX,
            "api",
            {"recordset_id": f"rs-{i}", "records_count": i, "harvest_date": "2020-02-18T01:00:00"},
        )
    es2.cluster.aliases[LEGACY_ALIAS] = LEGACY_INDEX
    original_scroll = es2.cluster._scroll

    def expired(method: str, body: Any) -> tuple[int, Any]:
        if method == "POST":
            es2.cluster.scrolls.clear()
        return original_scroll(method, body)

    es2.cluster._scroll = expired  # type: ignore[method-assign]
    lost = run(*base, "--from-url", es2.url, "--index", LEGACY_ALIAS, env=env)
    assert lost.returncode == 5 and "No search context found" in lost.stderr, lost.stderr
    assert "Traceback" not in with_password.stderr  # click's usage error, with its usage lines
    for result in (absent, unreachable, lost):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3, (
            result.stderr
        )
    assert store_status.status(config).complete_days == 0
