"""adopt's flag rules (adopt.sources, moved out of cli.py): refused before anything is opened,
exit 2, the password never repeated; otherwise where the copy is read from and written to."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idb_stats.adopt import sources
from idb_stats.config import Config, load_config
from idb_stats.errors import ExitCode, UsageError


def config(kind: str) -> Config:
    url = "host=db dbname=stats" if kind == "postgres" else "http://cluster:9200"
    return load_config(overrides={"source.dsn": "host=db", "store.kind": kind, "store.url": url}, environ={})


def test_postgres_needs_the_originals_cluster() -> None:
    with pytest.raises(UsageError, match="needs --from-url") as refused:
        sources(config("postgres"), None, None, None)
    assert refused.value.exit_code == ExitCode.USAGE


@given(
    user=st.text("abcxyz", min_size=1, max_size=5),
    password=st.text("PQRSTUVW123", min_size=4, max_size=12),
    kind=st.sampled_from(["postgres", "opensearch", "elasticsearch"]),
)
def test_a_from_url_with_a_password_is_refused_without_showing_it(
    user: str, password: str, kind: str
) -> None:
    for url in (f"http://{user}:{password}@legacy:9200", f"https://legacy:9200/?password={password}"):
        with pytest.raises(UsageError) as refused:
            sources(config(kind), None, None, url)
        assert password not in str(refused.value) and "without credentials" in str(refused.value)


@pytest.mark.parametrize("url", ["legacy:9200", "ftp://legacy", "host=legacy dbname=x"])
def test_a_from_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(UsageError, match="an http"):
        sources(config("opensearch"), None, None, url)


def test_a_search_store_adopts_in_place_into_a_new_index() -> None:
    base = config("opensearch")
    where = sources(base, None, None, None)
    assert (where.legacy.store_url, where.legacy.daily_index) == (base.store_url, base.daily_index)
    assert where.target_index == f"{base.daily_index}-v2"
    named = sources(base, "old-stats", "new-stats", "https://legacy:9200")
    assert (named.legacy.store_url, named.legacy.daily_index, named.target_index) == (
        "https://legacy:9200",
        "old-stats",
        "new-stats",
    )


def test_postgres_reads_the_other_cluster_and_has_no_target_index() -> None:
    base = config("postgres")
    where = sources(base, None, "ignored", "http://legacy:9200")
    assert where.legacy.store_url == "http://legacy:9200" and where.target_index is None
    assert where.legacy.daily_index == base.daily_index
