"""Real services for the tests: a PostgreSQL server started here, osmem for OpenSearch, and the
Elasticsearch client reaching osmem through a media-type-rewriting proxy.

IDB_STATS_TEST_OPENSEARCH_URL / IDB_STATS_TEST_ES_URL add a real cluster to the store matrix.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg2
import pytest
from helpers import REAL_CLUSTERS, MakeConfig, store_params
from hypothesis import settings
from proxies import ElasticsearchProxy

from idb_stats import embedded
from idb_stats.config import ENGINES, Config, load_config
from idb_stats.stores import memory

# CI runs the same examples every time (a submission lands on a green run, not a lucky one);
# locally each run draws new examples, which is how the property tests find new cases.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

_index_counter = itertools.count()


def pytest_report_header(config: Any) -> list[str]:
    lines = []
    for kind, variable in REAL_CLUSTERS.items():
        where = (
            "also against " + os.environ[variable]
            if os.environ.get(variable)
            else f"skipped ({variable} unset)"
        )
        lines.append(f"real {kind} cluster: {where}")
    return lines


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each aggregation engine (collect.engine), both held to the same tests against rules.py."""
    return str(request.param)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[embedded.EmbeddedPostgres]:
    with embedded.running() as server:
        yield server


@pytest.fixture
def dsn(pg_server: embedded.EmbeddedPostgres) -> Iterator[str]:
    """A fresh, empty database for this test; the test fails if it leaves a connection to it open
    (a store or source opened without `with`): in a daily run that is a leaked server session."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield pg_server.create_database(name)
    left_open = _sessions_left(pg_server, name)
    if left_open:
        pytest.fail(f"the test left {len(left_open)} connections to its database open: {left_open}")


def _sessions_left(server: embedded.EmbeddedPostgres, dbname: str, grace: float = 5.0) -> list[str]:
    """Sessions still connected to the database after the test, by application_name; a process
    the test started and stopped may take a moment to be gone from the server's view."""
    deadline = time.monotonic() + grace
    conn = psycopg2.connect(server.dsn())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            while True:
                cur.execute(
                    "SELECT application_name FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (dbname,),
                )
                names = sorted(row[0] or "(no application_name)" for row in cur.fetchall())
                if not names or time.monotonic() >= deadline:
                    return names
                time.sleep(0.1)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def osmem_url() -> Iterator[str]:
    from osmem_server import OsmemServer

    server = OsmemServer.start()
    yield server.url
    server.process.terminate()


@pytest.fixture(scope="session")
def es_proxy(osmem_url: str) -> Iterator[ElasticsearchProxy]:
    proxy = ElasticsearchProxy(osmem_url)
    yield proxy
    proxy.close()


@pytest.fixture(params=store_params())
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_config(request: pytest.FixtureRequest, dsn: str, store_kind: str) -> MakeConfig:
    """Config for this test's database and store; indexes are unique per test."""
    overrides: dict[str, Any] = {"source.dsn": dsn, "collect.lock_timeout": 30.0}
    kind = store_kind.removeprefix("real-")
    if store_kind == "opensearch":
        overrides["store.url"] = request.getfixturevalue("osmem_url")
    elif store_kind == "elasticsearch":
        overrides["store.url"] = request.getfixturevalue("es_proxy").url
    elif store_kind.startswith("real-"):
        overrides["store.url"] = os.environ[REAL_CLUSTERS[kind]]
    if kind != "postgres":
        prefix = f"t{os.getpid()}-{next(_index_counter)}"
        overrides.update(
            {
                "store.daily_index": f"{prefix}-stats",
                "store.totals_index": f"{prefix}-totals",
                "store.runs_index": f"{prefix}-runs",
                "store.api_index": f"{prefix}-api",
                "store.publishers_index": f"{prefix}-publishers",
                "store.bulk_max_retries": 4,
            }
        )
    if kind == "memory":
        # load_config refuses the test-only kind: the store is named by its url and schema, and
        # everything made here is dropped when the test ends.
        name = f"memory://t{os.getpid()}-{next(_index_counter)}"
        made: list[Config] = []

        def dropped() -> None:
            for config in made:
                memory.discard(config)

        request.addfinalizer(dropped)

        def make_memory(**extra: Any) -> Config:
            base = load_config(overrides={**overrides, **extra}, environ={})
            made.append(replace(base, store="memory", store_url=name))
            return made[-1]

        return make_memory
    overrides["store.kind"] = kind

    def make(**extra: Any) -> Config:
        return load_config(overrides={**overrides, **extra}, environ={})

    return make
