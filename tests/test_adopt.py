"""Taking over the original collector's index, on real servers (osmem; the Elasticsearch client
through the proxy), and the legacy documents it left: adopt, init's refusal, publishing over
random ids, legacy imports."""

from __future__ import annotations

import copy
import json
import urllib.request
from datetime import date, timedelta
from typing import Any

import pytest
from helpers import HARVEST, MakeConfig, assert_consistent, collect, load_week, other_store, request_lost, run

import idb_stats.collect
from idb_stats import status as store_status
from idb_stats.adopt import adopt
from idb_stats.clock import SYSTEM_CLOCK
from idb_stats.config import Config, load_config
from idb_stats.errors import (
    ConfigError,
    DuplicateDocuments,
    IdbStatsError,
    IncompatibleIndex,
    StoreError,
    UsageError,
)
from idb_stats.importing import import_documents
from idb_stats.legacy import original_mapping
from idb_stats.model import BLOCKS, COUNTER_KEY
from idb_stats.stores import open_store

SEARCH = pytest.mark.parametrize("store_kind", ["opensearch", "elasticsearch"], indirect=True)


def cli_setup(config: Config, legacy: Legacy, tmp_path: Any) -> tuple[Any, dict[str, str]]:
    """A config file naming this test's indexes, and the environment pointing at the legacy
    cluster: the CLI as an operator runs it."""
    toml = tmp_path / "config.toml"
    toml.write_text(
        "[store]\n"
        + "".join(
            f'{role}_index = "{getattr(config, role + "_index")}"\n'
            for role in ("daily", "totals", "runs", "api", "publishers")
        )
    )
    env = {
        "IDB_STATS_SOURCE_DSN": config.source_dsn or "",
        "IDB_STATS_STORE": "opensearch",
        "IDB_STATS_STORE_URL": legacy.url,
    }
    return toml, env


def http(url: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url + path, data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"null")


def as_original(doc: dict[str, Any]) -> dict[str, Any]:
    """A document of ours as the original wrote it: counts as doubles."""
    out = copy.deepcopy(doc)
    for rt, ty in BLOCKS:
        block = out[rt][ty]
        block["count"], block["total"] = float(block["count"]), float(block["total"])
    return out


class Legacy:
    """An index the way the original collector left it, and what adoption must make of it."""

    def __init__(self, url: str, index: str, week: list[dict[str, Any]]):
        self.url, self.index = url, index
        days = sorted({d["harvest_date"] for d in week})
        # Days 0, 1 and 3 of the week: the original left gaps. It never wrote COUNTER-style
        # figures, so its documents (and what adopt makes of them) have no counter block.
        kept = [
            {k: v for k, v in d.items() if k != COUNTER_KEY}
            for d in week
            if d["harvest_date"] in (days[0], days[1], days[3])
        ]
        self.expected = copy.deepcopy(kept)
        originals = [as_original(d) for d in kept]
        # A date-time harvest date.
        originals[0]["harvest_date"] += "T00:00:00"
        # An early document without the media record blocks: adopted with zeros.
        del originals[1]["mediarecords"]
        for ty in ("search", "seen", "mapping", "view", "download"):
            self.expected[1]["mediarecords"][ty] = {
                "count": 0,
                "total": 0,
                "items": [],
                "queries": [],
                "geocodes": [],
            }
        # A duplicate pair from a repeated run: the second one written differs (keep-last keeps it).
        first_of_day1 = next(
            i
            for i, d in enumerate(kept)
            if d["harvest_date"] == days[1] and d["records"]["search"]["geocodes"]
        )
        self.duplicate = (kept[first_of_day1]["recordset_id"], days[1])
        second = copy.deepcopy(originals[first_of_day1])
        second["records"]["search"]["count"] += 5
        second["records"]["search"]["total"] += 50
        second["records"]["search"]["geocodes"][0]["count"] += 50  # the largest stays first
        self.expected[first_of_day1]["records"]["search"]["count"] += 5
        self.expected[first_of_day1]["records"]["search"]["total"] += 50
        self.expected[first_of_day1]["records"]["search"]["geocodes"][0]["count"] += 50
        http(url, "PUT", f"/{index}", {"mappings": original_mapping()})
        for doc in [*originals, second]:
            http(url, "POST", f"/{index}/_doc", doc)  # no id: the server makes one, as for the original
        # The original kept its record-count snapshots in the same index.
        self.snapshot_recordset = kept[0]["recordset_id"]
        http(
            url,
            "POST",
            f"/{index}/_doc",
            {
                "recordset_id": self.snapshot_recordset,
                "records_count": 120,
                "mediarecords_count": 7,
                "harvest_date": f"{days[3]}T06:10:00.123",
            },
        )
        http(url, "POST", f"/{index}/_refresh")
        self.documents = len(originals) + 2
        self.days = [date.fromisoformat(days[i]) for i in (0, 1, 3)]


def week_documents(make_config: MakeConfig, dsn: str) -> list[dict[str, Any]]:
    load_week(dsn)
    scratch = other_store(make_config, "scratch")
    collect(scratch, first=HARVEST[0], last=HARVEST[-1])
    store = open_store(scratch)
    try:
        return list(store.export(HARVEST[0], HARVEST[-1]))
    finally:
        store.close()


def search_url(config: Config) -> str:
    return config.store_url or ""


def export_all(config: Config) -> list[dict[str, Any]]:
    store = open_store(config)
    try:
        return list(store.export(HARVEST[0], HARVEST[-1]))
    finally:
        store.close()


def totals_of(config: Config) -> list[dict[str, Any]]:
    store = open_store(config)
    try:
        return list(store.totals())
    finally:
        store.close()


@pytest.fixture
def legacy(make_config: MakeConfig, dsn: str, osmem_url: str) -> Legacy:
    """The original's index under the test config's daily index name (written straight to osmem)."""
    week = week_documents(make_config, dsn)
    return Legacy(osmem_url, make_config().daily_index, week)


@SEARCH
def test_init_refuses_the_original_mapping_listing_differences(
    make_config: MakeConfig, legacy: Legacy
) -> None:
    config = make_config()
    store = open_store(config)
    with pytest.raises(IncompatibleIndex) as refused:
        store.init()
    store.close()
    message = str(refused.value)
    assert "records.search.geocodes: is object, needs nested" in message
    assert "records.search.count: is double, needs long" in message
    assert "idb-stats adopt" in message
    # Refused before any write: no other index was created.
    probe: Any = open_store(config)
    assert probe.index_state(config.totals_index)[0] == "absent"
    probe.close()


@pytest.mark.parametrize("store_kind", ["opensearch"], indirect=True)
def test_init_exits_3_naming_the_differences(make_config: MakeConfig, legacy: Legacy, tmp_path: Any) -> None:
    config = make_config()
    toml, env = cli_setup(config, legacy, tmp_path)
    result = run("init", "--config", str(toml), env=env)
    assert result.returncode == 3, result.stderr
    assert "is object, needs nested" in result.stderr and "idb-stats adopt" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("store_kind", ["opensearch"], indirect=True)
def test_adopt_command_dry_run_refuse_then_keep_last(
    make_config: MakeConfig, legacy: Legacy, tmp_path: Any
) -> None:
    config = make_config()
    toml, env = cli_setup(config, legacy, tmp_path)
    plan = run("adopt", "--config", str(toml), "--dry-run", env=env)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["duplicate_recordset_days"] == 1
    refused = run("adopt", "--config", str(toml), env=env)
    assert refused.returncode == 6 and legacy.duplicate[0] in refused.stderr
    done = run("adopt", "--config", str(toml), "--duplicates", "keep-last", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["alias_switched"] is True
    assert f"adopted {legacy.days[1]}: " in done.stderr and "1 recordsets had duplicates" in done.stderr
    assert run("init", "--config", str(toml), env=env).returncode == 0


@SEARCH
def test_search_errors_carry_their_root_cause(make_config: MakeConfig, legacy: Legacy) -> None:
    config = make_config()
    store: Any = open_store(config)
    body = {"size": 0, "aggs": {"g": {"nested": {"path": "records.search.geocodes"}}}}
    with pytest.raises(StoreError) as failed:
        store.http.request("POST", f"/{config.daily_index}/_search", body)
    store.close()
    assert "records.search.geocodes" in str(failed.value) and "nested" in str(failed.value)


@SEARCH
def test_adopt_copies_every_document_switches_the_alias_and_collection_continues(
    make_config: MakeConfig, legacy: Legacy
) -> None:
    config = make_config()
    target = f"{config.daily_index}-v2"
    report = adopt(config, config, target, "keep-last", dry_run=False)
    assert report.alias_switched
    assert report.documents == legacy.documents
    assert report.as_dict()["size_snapshots"] == 1
    assert [d.harvest_date for d in report.days] == legacy.days
    assert {d.harvest_date: d.duplicates for d in report.days if d.duplicates} == {
        date.fromisoformat(legacy.duplicate[1]): {legacy.duplicate[0]: 2}
    }
    # The portal's name now reads the copy: one document per recordset and day, ids deterministic.
    store: Any = open_store(config)
    # The portal's one name covers the copy and the record counts (the original's `api` type).
    assert store.index_state(config.daily_index) == ("alias", sorted([target, config.api_index]))
    usage = {"size": 1000, "query": {"term": {"type": "search"}}}
    hits = store.http.request("POST", f"/{config.daily_index}/_search", usage)["hits"]["hits"]
    assert sorted(h["_id"] for h in hits) == sorted(
        f"{d['recordset_id']}-{d['harvest_date']}" for d in legacy.expected
    )
    assert store.snapshots() == {legacy.days[-1]: 1}
    store.init()  # the adopted index has the mapping this version needs
    store.close()
    daily = export_all(config)
    expected = sorted(legacy.expected, key=lambda d: (d["harvest_date"], d["recordset_id"]))
    assert daily == expected
    assert_consistent(daily, totals_of(config))
    # status counts gaps only from the last adopted day; a plain run continues the day after it.
    info = store_status.status(config).as_dict()
    assert info["missing_days"] == [] and info["last_complete_harvest_date"] == legacy.days[-1].isoformat()
    store = open_store(config)
    plan = idb_stats.collect.plan(
        config,
        idb_stats.collect.Selection(force_span=True),
        store,
        None,  # type: ignore[arg-type]
        SYSTEM_CLOCK,
    )
    store.close()
    assert plan.days[0] == legacy.days[-1] + timedelta(days=1)
    # A re-run finds the work done.
    assert adopt(config, config, target, "keep-last", dry_run=False).finished_before
    # Collecting a legacy day again replaces its documents: one per recordset, totals exact.
    collect(config, day=legacy.days[1])
    daily = export_all(config)
    day1 = [d["recordset_id"] for d in daily if d["harvest_date"] == legacy.days[1].isoformat()]
    assert len(day1) == len(set(day1)) > 0
    assert_consistent(daily, totals_of(config))


@SEARCH
def test_duplicates_are_refused_by_default_before_anything_is_written(
    make_config: MakeConfig, legacy: Legacy
) -> None:
    config = make_config()
    with pytest.raises(DuplicateDocuments) as refused:
        adopt(config, config, f"{config.daily_index}-v2", "refuse", dry_run=False)
    assert legacy.duplicate[0] in str(refused.value) and "--duplicates" in str(refused.value)
    store: Any = open_store(config)
    assert store.index_state(f"{config.daily_index}-v2")[0] == "absent"
    assert store.index_state(config.daily_index)[0] == "index"
    plan = adopt(config, config, f"{config.daily_index}-v2", "refuse", dry_run=True)
    store.close()
    assert plan.as_dict()["duplicate_recordset_days"] == 1 and plan.documents == legacy.documents


@pytest.mark.parametrize("store_kind", ["elasticsearch"], indirect=True)
def test_adopt_cut_midway_then_rerun_finishes(make_config: MakeConfig, legacy: Legacy, es_proxy: Any) -> None:
    config = make_config()
    target = f"{config.daily_index}-v2"
    bulks = [0]

    def cut_after_two_days(method: str, path: str, body: bytes) -> Any:
        if path.startswith("/_bulk") and target.encode() in body:
            bulks[0] += 1
            if bulks[0] >= 2:  # the second day's documents are written, its answer never comes
                return "drop_after"
        return None

    es_proxy.fault = cut_after_two_days
    try:
        with pytest.raises(Exception) as cut:
            adopt(config, config, target, "sum", dry_run=False)
        assert "unreachable" in str(cut.value)
    finally:
        es_proxy.fault = None
    store: Any = open_store(config)
    assert store.index_state(config.daily_index)[0] == "index"  # the original is kept
    cut_run = store.last_run("adopt")  # recorded like any write run, with its outcome
    assert cut_run["outcome"] == "failed" and "unreachable" in cut_run["error"]
    store.close()
    report = adopt(config, config, target, "sum", dry_run=False)
    assert report.alias_switched and report.already_adopted
    with open_store(config) as store:
        finished = store.last_run("adopt")
    assert finished is not None and finished["outcome"] == "ok" and finished["run_id"].startswith("adopt-")
    assert [d["harvest_date"] for d in finished["days"]] == [d.harvest_date.isoformat() for d in report.days]
    daily = export_all(config)
    keys = [(d["recordset_id"], d["harvest_date"]) for d in daily]
    assert len(keys) == len(set(keys)) == len(legacy.expected)
    assert_consistent(daily, totals_of(config))


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_adopt_into_postgres(make_config: MakeConfig, dsn: str, osmem_url: str) -> None:
    config = make_config()
    name = "legacy-" + dsn.rsplit("dbname=", 1)[-1].replace("_", "-")
    search = make_config(
        **{
            "store.kind": "opensearch",
            "store.url": osmem_url,
            **{f"store.{role}_index": f"{name}-{role}" for role in ("daily", "totals", "runs", "api")},
        }
    )
    legacy = Legacy(osmem_url, search.daily_index, week_documents(make_config, dsn))
    report = adopt(config, search, None, "keep-last", dry_run=False)
    assert not report.alias_switched
    with open_store(config) as store:
        run = store.last_run("adopt")
    assert run is not None and run["outcome"] == "ok" and len(run["days"]) == len(report.days)
    daily = export_all(config)
    assert daily == sorted(legacy.expected, key=lambda d: (d["harvest_date"], d["recordset_id"]))
    assert_consistent(daily, totals_of(config))
    assert store_status.status(config).as_dict()["missing_days"] == []


@SEARCH
def test_publishing_a_day_replaces_documents_under_other_ids(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[1])
    clean = export_all(config)
    day = HARVEST[1].isoformat()
    of_day = [d for d in clean if d["harvest_date"] == day]
    # What the original's timer adds if left running: random-id copies, one with a date-time.
    url = search_url(config)
    http(url, "POST", f"/{config.daily_index}/_doc", of_day[0])
    http(url, "POST", f"/{config.daily_index}/_doc", {**of_day[1], "harvest_date": day + "T00:00:00Z"})
    http(url, "POST", f"/{config.daily_index}/_refresh")
    collect(config, day=HARVEST[1])
    store: Any = open_store(config)
    body = {"size": 1000, "query": {"term": {"harvest_date": day}}}
    hits = store.http.request("POST", f"/{config.daily_index}/_search", body)["hits"]["hits"]
    store.close()
    assert sorted(h["_id"] for h in hits) == sorted(f"{d['recordset_id']}-{day}" for d in of_day)
    assert export_all(config) == clean
    assert_consistent(clean, totals_of(config))


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
def test_import_of_legacy_lines_accounts_for_every_line(make_config: MakeConfig, dsn: str) -> None:
    load_week(dsn)
    config = make_config()
    collect(config, first=HARVEST[0], last=HARVEST[1])
    clean = export_all(config)
    lines = [json.dumps(as_original(d)) for d in clean]
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "harvest_date": first["harvest_date"] + "T00:00:00"})
    lines.insert(1, lines[0])  # a duplicate pair
    target = other_store(make_config, "imported")
    # A line that is not JSON is refused with its number, before anything is written.
    with pytest.raises(UsageError, match=r"^input line 3: not valid JSON"):
        import_documents(target, [*lines[:2], "not json", *lines[2:]], "keep-last")
    with pytest.raises(DuplicateDocuments):
        import_documents(target, lines, "refuse")
    with pytest.raises(StoreError, match="does not exist yet"):  # refused before the store was touched
        export_all(target)
    outcomes = import_documents(target, lines, "keep-last")
    assert sum(o.read for o in outcomes) == len(lines)
    assert outcomes[0].duplicates == {first["recordset_id"]: 2}
    assert export_all(target) == clean
    assert_consistent(clean, totals_of(target))
    import_documents(target, lines, "sum")
    summed = export_all(target)
    assert summed[0]["records"]["search"]["count"] == 2 * clean[0]["records"]["search"]["count"]
    assert_consistent(summed, totals_of(target))


def test_check_config_refuses_roles_sharing_an_index() -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(
            overrides={
                "source.dsn": "postgresql://localhost/x",
                "store.kind": "opensearch",
                "store.url": "http://localhost:9200",
                "store.api_index": "stats",
            },
            environ={},
        )
    assert "store.daily_index and store.api_index: share index 'stats'" in str(refused.value)


@pytest.mark.parametrize("store_kind", ["elasticsearch"], indirect=True)
def test_publish_over_random_ids_cut_at_every_request_then_rerun(
    make_config: MakeConfig, dsn: str, es_proxy: Any
) -> None:
    load_week(dsn)
    config = make_config(**{"store.bulk_max_retries": 0})
    collect(config, first=HARVEST[0], last=HARVEST[-1])
    clean = export_all(config)
    day = HARVEST[1]
    upstream = f"{es_proxy.upstream.scheme}://{es_proxy.upstream.netloc}"  # osmem, below the proxy
    for doc in [d for d in clean if d["harvest_date"] == day.isoformat()][:3]:
        http(upstream, "POST", f"/{config.daily_index}/_doc", doc)  # the original's timer, still running
    http(upstream, "POST", f"/{config.daily_index}/_refresh")
    es_proxy.requests.clear()
    collect(config, day=day)
    steps = len(es_proxy.requests)
    # The last request frees the run lock, after the run recorded its end: losing it fails nothing
    # (test_faults covers it).
    method, path = es_proxy.requests[-1]
    assert method == "DELETE" and "/_doc/run-lock" in path
    for step in range(steps - 1):
        for doc in [d for d in clean if d["harvest_date"] == day.isoformat()][:2]:
            http(upstream, "POST", f"/{config.daily_index}/_doc", doc)
        http(upstream, "POST", f"/{config.daily_index}/_refresh")
        with request_lost(es_proxy, step), pytest.raises(IdbStatsError):
            collect(config, day=day)
    collect(config, day=day)
    assert export_all(config) == clean
    assert_consistent(clean, totals_of(config))
