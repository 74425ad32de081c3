"""The pieces a source's lists go through on their way into a document: the day's geocode table,
the ranking of [rank, hits] pairs, and the JSON text written to the stores."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from idb_stats.documents import build_document, canonical_geo, geocode_table, ranked_pairs
from idb_stats.json_text import compact
from idb_stats.model import Cell

DAY = date(2020, 2, 18)
geocode_objects = st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3)
hits = st.integers(min_value=0, max_value=2**80)  # exact sums go beyond 64 bits


@given(st.lists(st.tuples(st.integers(0, 40), hits), unique_by=lambda pair: pair[0]))
def test_pairs_are_ranked_by_hits_then_rank(pairs: list[tuple[int, int]]) -> None:
    ranked = ranked_pairs([list(pair) for pair in pairs])
    assert ranked == sorted(([rank, n] for rank, n in pairs), key=lambda pair: (-pair[1], pair[0]))


@given(st.lists(geocode_objects, unique_by=lambda geo: json.dumps(geo, sort_keys=True)))
def test_geocode_table_ranks_as_documents_rank_geocodes(objects: list[dict[str, str]]) -> None:
    # The texts as PostgreSQL prints jsonb (its own key order and spacing), in any order.
    texts = sorted(
        json.dumps(dict(sorted(geo.items(), reverse=True)), separators=(", ", ": ")) for geo in objects
    )
    ranks, table = geocode_table(texts)
    assert [table[rank - 1] for rank in ranks] == [canonical_geo(json.loads(t)) for t in texts]
    assert table == sorted(canonical_geo(geo) for geo in objects)


def test_texts_of_one_geocode_share_its_rank() -> None:
    ranks, table = geocode_table(['{"a": "1", "b": "2"}', "{}", '{"b":"2","a":"1"}'])
    assert ranks == [1, 2, 1]  # canonical '{"a":"1","b":"2"}' sorts before '{}'
    assert table == ['{"a":"1","b":"2"}', "{}"]


@given(
    st.dictionaries(st.text(max_size=3), hits),  # record -> hits
    st.dictionaries(st.integers(1, 6), hits, min_size=1),  # geocode rank -> hits
    st.dictionaries(st.integers(1, 5), hits),  # query rank -> hits
)
def test_pair_lists_make_the_same_block_as_single_cells(
    item_hits: dict[str, int], geo_hits: dict[int, int], query_hits: dict[int, int]
) -> None:
    geocodes = [canonical_geo({"country": c}) for c in "ABCDEF"]
    queries = [f"q{i}" for i in range(1, 6)]

    def pairs(kind: str, hits_by_key: dict[Any, int], entries: int = 0, total: int = 0) -> Cell:
        return Cell(
            "rs",
            "records",
            "seen",
            kind,
            json.dumps([[k, n] for k, n in hits_by_key.items()]),
            entries,
            total,
        )

    from_pairs, _ = build_document(
        "rs",
        DAY,
        [
            pairs("items", item_hits),
            pairs("geocodes", geo_hits, 7, sum(geo_hits.values())),
            pairs("queries", query_hits),
        ],
        geocodes=geocodes,
        queries=queries,
    )
    from_singles, _ = build_document(
        "rs",
        DAY,
        [
            *(Cell("rs", "records", "seen", "item", term, 0, n) for term, n in item_hits.items()),
            *(Cell("rs", "records", "seen", "geo", geocodes[r - 1], 0, n) for r, n in geo_hits.items()),
            *(Cell("rs", "records", "seen", "query", queries[r - 1], 0, n) for r, n in query_hits.items()),
        ],
    )
    block: dict[str, Any] = from_pairs["records"]["seen"]
    expected = from_singles["records"]["seen"]
    assert (block["items"], block["geocodes"], block["queries"]) == (
        expected["items"],
        expected["geocodes"],
        expected["queries"],
    )
    assert (block["count"], block["total"]) == (7, sum(geo_hits.values()))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_compact_json_is_json_dumps_text(value: Any) -> None:
    assert compact(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
