"""The index mappings the search stores need, and how a live index's mapping differs from them."""

from __future__ import annotations

from typing import Any

from ..model import (
    BLOCKS,
    COUNTER_FIELDS,
    COUNTER_KEY,
    COUNTER_METRICS,
    DOCUMENT_RECORD_TYPES,
    PUBLISHER_BLOCK,
)

# Days are stored as plain dates, but range bounds are parsed with the field's format, and real
# clients (the portal's stats page) send ISO date-times such as 2023-11-01T04:00:00.000Z.
DAY_FORMAT = "strict_date_optional_time||epoch_millis"


def _block_mapping() -> dict[str, Any]:
    # nested, so hits can be summed by country across a document's geocodes.
    geocodes: dict[str, Any] = {
        "type": "nested",
        "properties": {
            "geo": {"properties": {k: {"type": "keyword"} for k in ("country", "region", "city")}},
            "term": {"type": "keyword"},
            "count": {"type": "long"},
        },
    }
    return {
        "properties": {
            "count": {"type": "long"},
            "total": {"type": "long"},
            # The breakdowns of records and queries hold most of a document's terms (about 1.7M a day
            # on a busy portal) and nothing queries them inside the index: keep them in _source only.
            "items": {"type": "object", "enabled": False},
            "queries": {"type": "object", "enabled": False},
            "geocodes": geocodes,
        }
    }


def daily_mapping() -> dict[str, Any]:
    return {
        "dynamic": False,
        "properties": {
            "recordset_id": {"type": "keyword"},
            "harvest_date": {"type": "date", "format": DAY_FORMAT},
            "type": {"type": "keyword"},  # "search": the portal's usage query kinds (search.py)
            **{
                rt: {"properties": {ty: _block_mapping() for _, ty in BLOCKS if _ == rt}}
                for rt in DOCUMENT_RECORD_TYPES
            },
            # The COUNTER-style figures (absent on documents of days collected without them).
            COUNTER_KEY: {
                "properties": {
                    metric: {"properties": {f: {"type": "long"} for f in COUNTER_FIELDS}}
                    for metric in COUNTER_METRICS
                }
            },
        },
    }


def publishers_mapping() -> dict[str, Any]:
    """Publisher documents (documents.publisher_document): a publisher page's views of a day."""
    block = _block_mapping()
    block["properties"] = {k: v for k, v in block["properties"].items() if k not in ("items", "queries")}
    record_type, event_type = PUBLISHER_BLOCK
    return {
        "dynamic": False,
        "properties": {
            "publisher_id": {"type": "keyword"},
            "harvest_date": {"type": "date", "format": DAY_FORMAT},
            record_type: {"properties": {event_type: block}},
        },
    }


def totals_mapping() -> dict[str, Any]:
    block = {
        "properties": {
            "count": {"type": "long"},
            "total": {"type": "long"},
            "countries": {"properties": {"country": {"type": "keyword"}, "count": {"type": "long"}}},
        }
    }
    return {
        "dynamic": False,
        "properties": {
            "recordset_id": {"type": "keyword"},
            "first_harvest_date": {"type": "date", "format": DAY_FORMAT},
            "last_harvest_date": {"type": "date", "format": DAY_FORMAT},
            "days": {"type": "long"},
            "harvest_dates": {"type": "object", "enabled": False},
            **{
                rt: {"properties": {ty: block for _, ty in BLOCKS if _ == rt}} for rt in DOCUMENT_RECORD_TYPES
            },
        },
    }


def runs_mapping() -> dict[str, Any]:
    return {
        "dynamic": False,
        "properties": {
            "kind": {"type": "keyword"},
            "run_id": {"type": "keyword"},
            "harvest_date": {"type": "date", "format": DAY_FORMAT},
            "started_at": {"type": "date"},
            "outcome": {"type": "keyword"},
            "command": {"type": "keyword"},
            # change records (changes.py)
            "recordset_id": {"type": "keyword"},
            "changed_at": {"type": "date"},
        },
    }


def api_mapping() -> dict[str, Any]:
    return {
        "dynamic": False,
        "properties": {
            "recordset_id": {"type": "keyword"},
            "harvest_date": {"type": "date"},
            "snapshot_date": {"type": "date", "format": DAY_FORMAT},
            "records_count": {"type": "long"},
            "mediarecords_count": {"type": "long"},
            "type": {"type": "keyword"},  # "api": the portal's record-count query kinds (search.py)
        },
    }


# What a date field without a format parses: the same as DAY_FORMAT.
DEFAULT_DATE_FORMAT = "strict_date_optional_time||epoch_millis"


def mapping_differences(required: dict[str, Any], live: dict[str, Any], path: str = "") -> list[str]:
    """Each field of the required mapping that the live one maps otherwise (a field it lacks is
    no difference: init adds it)."""
    differences = []
    live_fields = live.get("properties", {})
    for name, want in required.get("properties", {}).items():
        field = f"{path}{name}"
        got = live_fields.get(name)
        want_type = want.get("type", "object")
        if got is None:
            continue  # added in place by init (PUT _mapping): a new field conflicts with nothing
        got_type = got.get("type", "object")
        if got_type != want_type:
            differences.append(f"{field}: is {got_type}, needs {want_type}")
        elif want.get("enabled") is False and got.get("enabled", True) is not False:
            differences.append(f"{field}: is indexed, needs to be stored only (enabled: false)")
        elif "format" in want and got.get("format", DEFAULT_DATE_FORMAT) != want["format"]:
            differences.append(f"{field}: format {got.get('format')}, needs {want['format']}")
        elif "properties" in want:
            differences += mapping_differences(want, got, f"{field}.")
    return differences
