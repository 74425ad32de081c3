"""The Elasticsearch/OpenSearch store logic: one implementation over plain REST calls.

It is handed a SearchTransport (transport.py) that sends one request; elasticsearch.py and
opensearch.py wrap their official clients as one. The index mappings live in mappings.py. This
module stays above 300 lines because the publish protocol, ledger, reads and adopt support are one
Store over the same four indexes and shared helpers (_scan, _refresh, _require_indexes).

Publishing a day keeps, for every recordset r, the invariant
    D is listed in totals(r)  <=>  totals(r) include exactly the current daily document (r, D)
through three idempotent phases, so a crash anywhere is repaired by publishing the day again:
  1. for each existing daily document of D whose totals list D: subtract it, unlist D;
  2. overwrite the day's documents, delete every other document of the day (recordsets gone from
     it, and documents under any other id: the original collector's random ids and duplicates);
  3. for each new document: add it to its totals and list D.
Totals are read-merge-written with optimistic concurrency (if_seq_no/if_primary_term): on a
conflict the document is re-read and the merge redone. The day is marked complete last.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from .. import changes
from ..config import Config
from ..documents import add_terms, by_count, daily_document_id, publisher_document_id
from ..errors import DataQualityError, IncompatibleIndex, StoreError
from ..model import BLOCKS, COUNT_FIELDS, UNKNOWN_COUNTRY, DayStats, HeldDays
from ..ports import ClosedOnExit, Document
from ..runs import RunRecord
from ..totals import (
    ONE_DAY,
    Summary,
    Totals,
    day_ranges,
    listed_days,
    rebuilt,
    replace_day,
    summarize,
    with_day,
)
from .lease import LeaseRunLock
from .mappings import (
    api_mapping,
    daily_mapping,
    mapping_differences,
    publishers_mapping,
    runs_mapping,
    totals_mapping,
)
from .transport import BulkAction, RetryingRequests, SearchTransport, check_bulk

log = logging.getLogger(__name__)

PAGE = 1000
# What a daily document's totals need of it (summarize).
SUMMARY_FIELDS = [f"{rt}.{ty}.{f}" for rt, ty in BLOCKS for f in ("count", "total", "geocodes")]
TOTALS_CHUNK = 500
LONG_MAX = 2**63 - 1  # the largest number a `long` field holds


def beyond_long(summary: Summary) -> str | None:
    """The first count, total or country's hits of a (day's or totals') summary that no `long`
    field can hold, as `records.search.total = N`; a geocode's count is at most its country's."""
    for (rt, ty), figures in summary.counts.items():
        for name, value in zip(("count", "total"), figures, strict=True):
            if value > LONG_MAX:
                return f"{rt}.{ty}.{name} = {value}"
    for (rt, ty), by_country in summary.countries.items():
        for country, hits in by_country.items():
            if hits > LONG_MAX:
                return f"{rt}.{ty} hits from {country!r} = {hits}"
    return None


def refuse_beyond_long(kind: str, what: str, summary: Summary) -> None:
    """Sums are exact integers (beyond 2**63 on PostgreSQL); a search engine's long field refuses
    them one bulk item at a time, in a message nobody can act on: say what and where, once."""
    too_big = beyond_long(summary)
    if too_big:
        raise DataQualityError(
            f"{what}: {too_big} is more than {kind}'s long fields hold (2^63 - 1); that day is left "
            "incomplete (missing in status): skip or fix the rows behind it, or use the PostgreSQL "
            "store, which holds such sums exactly"
        )


# Recordset buckets per period when a series is asked for all recordsets at once.
SERIES_RECORDSETS = 10_000

# Every document says which of the portal's query kinds it answers (Elasticsearch's recipe for
# removing mapping types: the type becomes a keyword field). After adopt the daily name is an
# alias of the daily and the record-count index, so reads of daily documents leave `api` out.
USAGE_TYPE, SNAPSHOT_TYPE = "search", "api"


def usage_only(query: dict[str, Any]) -> dict[str, Any]:
    return {"bool": {"filter": [query], "must_not": [{"term": {"type": SNAPSHOT_TYPE}}]}}


class SearchStore(ClosedOnExit):
    kind = "search"

    def __init__(self, config: Config, transport: SearchTransport):
        self.config = config
        self.daily = config.daily_index
        self.totals_index = config.totals_index
        self.runs_index = config.runs_index
        self.api_index = config.api_index
        self.publishers_index = config.publishers_index
        self._identity: str | None = None
        self.http = RetryingRequests(transport, self.kind, config.bulk_max_retries, config.bulk_chunk_bytes)

    @property
    def identity(self) -> str:
        """The cluster as it names itself (uuid and name) and the indexes written, whatever URL
        reaches it; asked once, when the run lock is first needed."""
        if self._identity is None:
            # GET / needs the cluster `monitor` privilege; a key without it keys the lock by URL.
            about = self.http.request("GET", "/", ok=(401, 403))
            url = urlsplit(self.config.store_url or "")
            cluster = (
                [str(about.get("cluster_uuid")), str(about.get("cluster_name"))]
                if about
                else [f"{url.scheme}://{url.hostname}:{url.port}"]
            )
            where = "/".join(
                [
                    *cluster,
                    self.daily,
                    self.totals_index,
                    self.runs_index,
                    self.api_index,
                ]
            )
            self._identity = f"{self.kind}:" + hashlib.sha256(where.encode()).hexdigest()[:16]
        return self._identity

    # --- schema ------------------------------------------------------------------------------

    def _roles(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            ("daily", self.daily, daily_mapping()),
            ("totals", self.totals_index, totals_mapping()),
            ("runs", self.runs_index, runs_mapping()),
            ("api", self.api_index, api_mapping()),
            ("publishers", self.publishers_index, publishers_mapping()),
        ]

    def init(self) -> None:
        # Every live index is checked before anything is written: a mapping made by the original
        # collector (or an older version) would make queries fail later with a bare HTTP 500.
        problems = [
            f"index {index!r} ({role}): {difference}"
            for role, index, mapping in self._roles()
            for difference in self.index_differences(index, mapping)
        ]
        if problems:
            raise IncompatibleIndex(
                "the store's indexes do not have the mapping idb-stats needs:\n"
                + "\n".join(f"  - {p}" for p in problems)
                + f"\nmigrate them with `idb-stats adopt` (copies {self.daily!r} into a new index with "
                "this mapping and points an alias of the same name at it; see docs/migrating.md)"
            )
        for role, index, mapping in self._roles():
            self._ensure_index(index, mapping)
            log.debug("%s index %s ready (%s)", self.kind, index, role)

    def _ensure_index(self, index: str, mapping: dict[str, Any]) -> None:
        template = {
            "index_patterns": [index],
            "priority": 200,
            "template": {"settings": {"number_of_shards": 1}, "mappings": mapping},
        }
        self.http.request("PUT", f"/_index_template/idb-stats-{quote(index)}", template)
        if not self.http.request("HEAD", f"/{quote(index)}", ok=(404,)):
            self.http.request("PUT", f"/{quote(index)}", {}, ok=(400,))  # 400: created meanwhile
        else:
            # Fields a newer version added (the ledger's command, change records): a live index
            # gets them in place; index_differences has already refused any conflicting field.
            behind = self.index_state(index)[1] if index == self.daily else []
            for concrete in [i for i in behind if i != self.api_index] or [index]:
                self.http.request(
                    "PUT", f"/{quote(concrete)}/_mapping", {"properties": mapping["properties"]}
                )

    def index_differences(self, index: str, mapping: dict[str, Any]) -> list[str]:
        """How a live index (or the index behind an alias) differs from the mapping; [] if absent."""
        live = self.http.request("GET", f"/{quote(index)}/_mapping", ok=(404,))
        if not live:
            return []
        differences: list[str] = []
        for name, concrete in live.items():
            if index == self.daily and name == self.api_index:
                continue  # the portal's alias also covers the record-count index
            mappings = concrete.get("mappings", {})
            if "properties" not in mappings and len(mappings) == 1:  # a pre-7 cluster: under a type
                mappings = next(iter(mappings.values()))
            differences += mapping_differences(mapping, mappings)
        return differences

    def _initialized(self) -> bool:
        return bool(self.http.request("HEAD", f"/{quote(self.api_index)}", ok=(404,)))

    def _require_indexes(self) -> None:
        if not self._initialized():
            raise StoreError(f"the {self.kind} indexes do not exist yet: run `idb-stats init`")

    def _require_publishers_index(self) -> None:
        # Made by `init` since schema version 2; written to without it, the index would be created
        # with a guessed mapping.
        if not self.http.request("HEAD", f"/{quote(self.publishers_index)}", ok=(404,)):
            raise StoreError(
                f"the {self.kind} index {self.publishers_index!r} (publisher page views) does not exist: "
                "the indexes were made by an older idb-stats; run `idb-stats init`"
            )

    # --- reading helpers ---------------------------------------------------------------------

    def _scan(
        self, index: str, query: dict[str, Any], sort: list[Any], source: Any = True
    ) -> Iterator[dict[str, Any]]:
        """Every hit of a query, in sort order, paged with search_after."""
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {"query": query, "sort": sort, "size": PAGE, "_source": source}
            if after is not None:
                body["search_after"] = after
            hits = self.http.request("POST", f"/{quote(index)}/_search", body)["hits"]["hits"]
            yield from hits
            if len(hits) < PAGE:
                return
            after = hits[-1]["sort"]

    def _refresh(self, *indexes: str) -> None:
        self.http.request("POST", f"/{','.join(quote(i) for i in indexes)}/_refresh")

    # --- publishing a day ----------------------------------------------------------------------

    def _marker_path(self, day: date) -> str:
        return f"/{quote(self.runs_index)}/_doc/day-{day}"

    def _begin(self, day: date, what: str) -> str | None:
        """Replace the day's mark with one saying `what` began on it, before anything of the day
        is touched; returns the kind of mark it had ("day": complete, "unfinished": an earlier
        publish or forget-day of it died part-way, None: none).

        The unfinished mark is what lets the next publish tell the state a dead one leaves (some
        totals no longer list the day while its documents are still there: phase 1 ran) from
        totals damaged behind the store's back, which it must rebuild; and what status shows."""
        found = self.http.request("GET", self._marker_path(day), ok=(404,))
        previous = (found or {}).get("_source", {}).get("kind") if found else None
        mark = {"kind": "unfinished", "harvest_date": day.isoformat(), "operation": what}
        self.http.request("PUT", self._marker_path(day), mark, params={"refresh": "true"})
        return str(previous) if previous else None

    @staticmethod
    def _day_bounds(day: date) -> dict[str, str]:
        return {"gte": day.isoformat(), "lt": (day + ONE_DAY).isoformat()}

    def _day_documents(self, day: date) -> tuple[dict[str, Summary], set[str]]:
        """The summaries of the day's documents that totals may hold (those with the deterministic
        id), and the ids of all its documents. Totals hold at most the document with the
        deterministic id; any other document of the day (the original collector's random ids, its
        duplicates) is in no totals. A range, so a legacy date-time of the day matches too."""
        self._refresh(self.daily)
        old: dict[str, Summary] = {}
        present: set[str] = set()
        for hit in self._scan(
            self.daily,
            usage_only({"range": {"harvest_date": self._day_bounds(day)}}),
            [{"recordset_id": "asc"}],
            ["recordset_id", *SUMMARY_FIELDS],
        ):
            present.add(hit["_id"])
            recordset_id = hit["_source"].get("recordset_id")
            if recordset_id is not None and hit["_id"] == daily_document_id(recordset_id, day):
                old[recordset_id] = summarize(hit["_source"])
        return old, present

    def publish_day(
        self, stats: DayStats, documents: Iterable[Document], publishers: Sequence[Document] | None = None
    ) -> None:
        self._require_indexes()
        if publishers is not None:
            self._require_publishers_index()
        day = stats.harvest_date
        previous = self._begin(day, f"a publish by run {stats.run_id}")
        old, present = self._day_documents(day)
        # Phase 1: take the day out of the totals that list it.
        self._take_out_of_totals(day, old, interrupted=previous == "unfinished")
        # Phase 2: the new documents replace the day.
        new: dict[str, Summary] = {}

        def index_actions() -> Iterator[BulkAction]:
            for doc in documents:
                new[doc["recordset_id"]] = summarize(doc)
                refuse_beyond_long(self.kind, f"{day} {doc['recordset_id']!r}", new[doc["recordset_id"]])
                yield (
                    {"index": {"_index": self.daily, "_id": daily_document_id(doc["recordset_id"], day)}},
                    {**doc, "type": USAGE_TYPE},
                )

        check_bulk(self.http.bulk(index_actions()))
        written = {daily_document_id(rs, day) for rs in new}
        check_bulk(
            self.http.bulk(
                ({"delete": {"_index": self.daily, "_id": i}}, None) for i in sorted(present - written)
            ),
            allowed=(404,),
        )

        # Phase 3: add the new documents to their totals.
        def add(current: dict[str, Totals]) -> dict[str, Totals]:
            # A recordset without totals is new, unless its totals were deleted: then it has
            # documents of other days, which the totals must hold too.
            lost = self._with_other_days(day, [rs for rs, t in current.items() if t.empty])
            current = {**current, **self._rebuilt(day, {rs: current[rs] for rs in lost})}
            return {rs: with_day(t, day, new[rs]) for rs, t in current.items() if not t.includes(day)}

        self._merge_totals(sorted(new), add)
        if publishers is not None:  # None (import, adopt): the day's publisher documents stay
            self._replace_publishers(day, publishers)
        if previous == "day":
            self._record_changes(stats, old, new)
        self._refresh(self.daily, self.totals_index)
        marker = {"kind": "day", **stats.as_dict()}
        self.http.request("PUT", self._marker_path(day), marker, params={"refresh": "true"})

    def forget_day(self, harvest_date: date) -> int:
        """Mark the day unfinished first, so a failure part-way leaves it damaged (shown by status,
        redone by the catch-up); then the same idempotent phases as a publish with no documents:
        out of the totals, documents deleted; then the mark goes."""
        self._require_indexes()
        day = harvest_date
        previous = self._begin(day, "a forget-day")
        old, present = self._day_documents(day)
        self._take_out_of_totals(day, old, interrupted=previous == "unfinished")
        check_bulk(
            self.http.bulk(({"delete": {"_index": self.daily, "_id": i}}, None) for i in sorted(present)),
            allowed=(404,),
        )
        if self.http.request("HEAD", f"/{quote(self.publishers_index)}", ok=(404,)):
            self._replace_publishers(day, [])
        self._refresh(self.daily, self.totals_index)
        self.http.request("DELETE", self._marker_path(day), params={"refresh": "true"}, ok=(404,))
        return len(old)

    def _take_out_of_totals(self, day: date, old: dict[str, Summary], interrupted: bool) -> None:
        """Phase 1: no totals list the day or hold its documents afterwards.

        Totals listing the day lose its old document's contribution. Totals that cannot be
        trusted for that (they list the day but its document is gone, or hold its document
        without listing it while no interrupted publish explains it) are rebuilt from the
        recordset's documents of the other days."""
        iso = day.isoformat()
        self._refresh(self.totals_index)
        listing = {
            hit["_source"]["recordset_id"]
            for hit in self._scan(
                self.totals_index,
                {
                    "bool": {
                        "filter": [
                            {"range": {"first_harvest_date": {"lte": iso}}},
                            {"range": {"last_harvest_date": {"gte": iso}}},
                        ]
                    }
                },
                [{"recordset_id": "asc"}],
                ["recordset_id"],
            )
        }

        def take_out(current: dict[str, Totals]) -> dict[str, Totals]:
            changed: dict[str, Totals] = {}
            untrusted: dict[str, Totals] = {}
            for rs, totals in current.items():
                swapped = replace_day(totals, day, old.get(rs), None, old_uncounted=interrupted)
                if swapped is None:
                    untrusted[rs] = totals
                elif swapped is not totals:
                    changed[rs] = swapped
            return {**changed, **self._rebuilt(day, untrusted)}

        self._merge_totals(sorted(old.keys() | listing), take_out)

    def _rebuilt(self, day: date, current: dict[str, Totals]) -> dict[str, Totals]:
        """These recordsets' totals summed from their documents of every day but `day`.

        A day that another worker of the run is publishing right now (marked unfinished) counts
        only where the totals list it: that publish adds it to the others in its phase 3."""
        if not current:
            return {}
        busy = set(self._unfinished()) - {day}
        days: dict[str, list[tuple[date, Summary]]] = {rs: [] for rs in current}
        for hit in self._scan(
            self.daily,
            usage_only(
                {
                    "bool": {
                        "filter": [{"terms": {"recordset_id": sorted(current)}}],
                        "must_not": [{"range": {"harvest_date": self._day_bounds(day)}}],
                    }
                }
            ),
            [{"recordset_id": "asc"}, {"harvest_date": "asc"}],
            ["recordset_id", "harvest_date", *SUMMARY_FIELDS],
        ):
            rs, held = hit["_source"]["recordset_id"], date.fromisoformat(hit["_source"]["harvest_date"][:10])
            if hit["_id"] != daily_document_id(rs, held) or (held in busy and not current[rs].includes(held)):
                continue
            days[rs].append((held, summarize(hit["_source"])))
        return {rs: rebuilt(rs, held) for rs, held in days.items()}

    def _with_other_days(self, day: date, recordsets: list[str]) -> list[str]:
        """Of these recordsets, those with documents of other days than `day`."""
        if not recordsets:
            return []
        body = {
            "size": 0,
            "query": usage_only(
                {
                    "bool": {
                        "filter": [{"terms": {"recordset_id": recordsets}}],
                        "must_not": [{"range": {"harvest_date": self._day_bounds(day)}}],
                    }
                }
            ),
            "aggs": {"rs": {"terms": {"field": "recordset_id", "size": len(recordsets)}}},
        }
        response = self.http.request("POST", f"/{quote(self.daily)}/_search", body)
        return sorted(bucket["key"] for bucket in response["aggregations"]["rs"]["buckets"])

    def _unfinished(self) -> dict[date, str]:
        """Days whose publish or forget-day began and has not finished, with what began."""
        self._refresh(self.runs_index)
        marks = self._scan(self.runs_index, {"term": {"kind": "unfinished"}}, [{"harvest_date": "asc"}])
        return {
            date.fromisoformat(hit["_source"]["harvest_date"][:10]): str(hit["_source"].get("operation", ""))
            for hit in marks
        }

    def _replace_publishers(self, day: date, publishers: Sequence[Document]) -> None:
        """The day's publisher documents become these (no totals: nothing sums them yet)."""
        check_bulk(
            self.http.bulk(
                (
                    {
                        "index": {
                            "_index": self.publishers_index,
                            "_id": publisher_document_id(d["publisher_id"], day),
                        }
                    },
                    d,
                )
                for d in publishers
            )
        )
        self._refresh(self.publishers_index)
        written = {publisher_document_id(d["publisher_id"], day) for d in publishers}
        present = {
            hit["_id"]
            for hit in self._scan(
                self.publishers_index,
                {"term": {"harvest_date": day.isoformat()}},
                [{"publisher_id": "asc"}],
                False,
            )
        }
        check_bulk(
            self.http.bulk(
                ({"delete": {"_index": self.publishers_index, "_id": i}}, None)
                for i in sorted(present - written)
            ),
            allowed=(404,),
        )
        self._refresh(self.publishers_index)

    def _record_changes(self, stats: DayStats, old: dict[str, Summary], new: dict[str, Summary]) -> None:
        """Log what a republish changed, as documents of kind "change" in the runs index.

        Written after the totals, before the day's marker. A publish that fails in between is
        redone by the next run, which finds the new numbers in place and records nothing: on
        these stores a change can go unrecorded then (PostgreSQL records it in the day's
        transaction)."""
        changed_at = datetime.now(UTC).isoformat()
        records = changes.diff_day(stats.harvest_date, old, new, stats.reason, stats.run_id, changed_at)
        check_bulk(
            self.http.bulk(
                (
                    {
                        "index": {
                            "_index": self.runs_index,
                            "_id": f"change-{stats.run_id}-{stats.harvest_date}-{r['recordset_id']}",
                        }
                    },
                    {"kind": "change", **r},
                )
                for r in records
            )
        )

    def changes(self, since: date | None = None, recordset_id: str | None = None) -> list[dict[str, Any]]:
        # Filtered here (changes are few): a runs index made before the change ledger does not map
        # recordset_id and changed_at, so it can sort on them (unmapped_type) but not filter.
        if not self._initialized():
            return []
        self._refresh(self.runs_index)
        records = [
            {k: v for k, v in hit["_source"].items() if k != "kind"}
            for hit in self._scan(
                self.runs_index,
                {"term": {"kind": "change"}},
                [
                    {"harvest_date": "asc"},
                    {"recordset_id": {"order": "asc", "unmapped_type": "keyword"}},
                    {"changed_at": {"order": "asc", "unmapped_type": "date"}},
                ],
            )
        ]
        return changes.selected(records, since, recordset_id)

    def _merge_totals(
        self, recordsets: list[str], merge: Callable[[dict[str, Totals]], dict[str, Totals]]
    ) -> None:
        """Read-merge-write the totals of these recordsets, a chunk at a time; re-read and redo on
        a version conflict.

        merge gets a chunk's current totals (empty ones for recordsets without) and returns those
        to write, leaving out the ones that need no change (which makes every phase idempotent).
        """
        for start in range(0, len(recordsets), TOTALS_CHUNK):
            pending = recordsets[start : start + TOTALS_CHUNK]
            for attempt in range(self.http.max_retries + 1):
                current = self._get_totals(pending)
                merged = merge({rs: current[rs][0] if rs in current else Totals(rs) for rs in pending})
                actions: list[BulkAction] = []
                for rs, totals in sorted(merged.items()):
                    version = current[rs][1] if rs in current else None
                    meta: dict[str, Any] = {"_index": self.totals_index, "_id": rs}
                    if version is not None:
                        meta["if_seq_no"], meta["if_primary_term"] = version
                    if totals.empty:
                        if version is not None:
                            actions.append(({"delete": meta}, None))
                    else:
                        refuse_beyond_long(self.kind, f"the totals of {rs!r}", totals.summary)
                        actions.append(({"index" if version else "create": meta}, totals.to_doc()))
                results = self.http.bulk(actions)
                conflicts = [r["_id"] for r in results if r.get("status") == 409]
                check_bulk([r for r in results if r.get("status") != 409], allowed=(404,))
                if not conflicts:
                    break
                if attempt == self.http.max_retries:
                    raise StoreError(
                        f"{self.kind}: totals of {len(conflicts)} recordsets kept changing under us"
                    )
                log.info("%d totals changed meanwhile, re-reading", len(conflicts))
                pending = sorted(conflicts)

    def rewrite_totals(self, documents: Sequence[Document], gone: Sequence[str]) -> None:
        self._require_indexes()
        check_bulk(
            self.http.bulk(
                ({"index": {"_index": self.totals_index, "_id": d["recordset_id"]}}, d) for d in documents
            )
        )
        check_bulk(
            self.http.bulk(({"delete": {"_index": self.totals_index, "_id": rs}}, None) for rs in gone),
            allowed=(404,),
        )
        self._refresh(self.totals_index)

    def _get_totals(self, recordsets: list[str]) -> dict[str, tuple[Totals, tuple[int, int] | None]]:
        if not recordsets:
            return {}
        response = self.http.request("POST", f"/{quote(self.totals_index)}/_mget", {"ids": recordsets})
        return {
            d["_id"]: (Totals.from_doc(d["_source"]), (d["_seq_no"], d["_primary_term"]))
            for d in response["docs"]
            if d.get("found")
        }

    # --- reading -----------------------------------------------------------------------------

    def export(self, first: date, last: date) -> Iterator[Document]:
        self._require_indexes()
        query = {"range": {"harvest_date": {"gte": first.isoformat(), "lte": last.isoformat()}}}
        for hit in self._scan(
            self.daily, usage_only(query), [{"harvest_date": "asc"}, {"recordset_id": "asc"}]
        ):
            source = hit["_source"]
            source.pop("type", None)
            yield source

    def publishers(self, first: date, last: date) -> Iterator[Document]:
        self._require_indexes()
        if not self.http.request("HEAD", f"/{quote(self.publishers_index)}", ok=(404,)):
            return
        query = {"range": {"harvest_date": {"gte": first.isoformat(), "lte": last.isoformat()}}}
        for hit in self._scan(
            self.publishers_index, query, [{"harvest_date": "asc"}, {"publisher_id": "asc"}]
        ):
            yield hit["_source"]

    def totals(self, recordsets: Sequence[str] = ()) -> Iterator[Document]:
        self._require_indexes()
        query = {"terms": {"recordset_id": list(recordsets)}} if recordsets else {"match_all": {}}
        for hit in self._scan(self.totals_index, query, [{"recordset_id": "asc"}]):
            yield hit["_source"]

    def completed_days(self) -> dict[date, dict[str, Any]]:
        if not self._initialized():
            return {}
        return {
            date.fromisoformat(hit["_source"]["harvest_date"]): hit["_source"]
            for hit in self._scan(self.runs_index, {"term": {"kind": "day"}}, [{"harvest_date": "asc"}])
        }

    def held_days(self) -> HeldDays:
        if not self._initialized():
            return HeldDays()
        self._refresh(self.daily, self.totals_index)
        totals = self._scan(
            self.totals_index, {"match_all": {}}, [{"recordset_id": "asc"}], ["harvest_dates"]
        )
        listed = listed_days(day_ranges(hit["_source"].get("harvest_dates", [])) for hit in totals)
        histogram = {"field": "harvest_date", "calendar_interval": "day", "min_doc_count": 1}
        body = {
            "size": 0,
            "query": usage_only({"match_all": {}}),
            "aggs": {"days": {"date_histogram": histogram}},
        }
        buckets = self.http.request("POST", f"/{quote(self.daily)}/_search", body)["aggregations"]["days"][
            "buckets"
        ]
        documents = {
            datetime.fromtimestamp(b["key"] / 1000, UTC).date(): int(b["doc_count"]) for b in buckets
        }
        return HeldDays(documents, listed, self._unfinished())

    def record_run(self, run: RunRecord) -> None:
        self._require_indexes()
        self.http.request(
            "PUT",
            f"/{quote(self.runs_index)}/_doc/run-{run.run_id}",
            {"kind": "run", **run.as_dict()},
            params={"refresh": "true"},
        )

    def run_lock(self) -> LeaseRunLock:
        """A lock document with a lease in the runs index (lease.py)."""
        return LeaseRunLock(self.http, self.runs_index, self.config.lock_lease)

    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        if not self._initialized():
            return []
        body = {"query": {"term": {"kind": "run"}}, "sort": [{"started_at": "desc"}], "size": limit}
        hits = self.http.request("POST", f"/{quote(self.runs_index)}/_search", body)["hits"]["hits"]
        return [{k: v for k, v in h["_source"].items() if k != "kind"} for h in hits]

    def last_run(self, command: str) -> dict[str, Any] | None:
        if not self._initialized():
            return None
        body = {
            "query": {"bool": {"filter": [{"term": {"kind": "run"}}, {"term": {"command": command}}]}},
            "sort": [{"started_at": "desc"}],
            "size": 1,
        }
        hits = self.http.request("POST", f"/{quote(self.runs_index)}/_search", body)["hits"]["hits"]
        return {k: v for k, v in hits[0]["_source"].items() if k != "kind"} if hits else None

    def write_snapshot(self, snapshot_date: date, documents: Iterable[Document]) -> int:
        self._require_indexes()
        written: set[str] = set()

        def actions() -> Iterator[BulkAction]:
            for doc in documents:
                written.add(doc["recordset_id"])
                yield (
                    {
                        "index": {
                            "_index": self.api_index,
                            "_id": daily_document_id(doc["recordset_id"], snapshot_date),
                        }
                    },
                    {**doc, "snapshot_date": snapshot_date.isoformat(), "type": SNAPSHOT_TYPE},
                )

        check_bulk(self.http.bulk(actions()))
        self._refresh(self.api_index)
        stale = [
            hit["_id"]
            for hit in self._scan(
                self.api_index,
                {"term": {"snapshot_date": snapshot_date.isoformat()}},
                [{"recordset_id": "asc"}],
                ["recordset_id"],
            )
            if hit["_source"]["recordset_id"] not in written
        ]
        check_bulk(
            self.http.bulk(({"delete": {"_index": self.api_index, "_id": i}}, None) for i in stale),
            allowed=(404,),
        )
        self._refresh(self.api_index)
        return len(written)

    def snapshots(self) -> dict[date, int]:
        if not self._initialized():
            return {}
        body = {"size": 0, "aggs": {"days": {"terms": {"field": "snapshot_date", "size": 10000}}}}
        buckets = self.http.request("POST", f"/{quote(self.api_index)}/_search", body)["aggregations"][
            "days"
        ]["buckets"]
        return {date.fromisoformat(b.get("key_as_string", "")[:10]): b["doc_count"] for b in buckets}

    def _filter(self, recordsets: Sequence[str], first: date | None, last: date | None) -> dict[str, Any]:
        clauses: list[dict[str, Any]] = [{"terms": {"recordset_id": list(recordsets)}}] if recordsets else []
        bounds = {k: v.isoformat() for k, v in (("gte", first), ("lte", last)) if v is not None}
        if bounds:
            clauses.append({"range": {"harvest_date": bounds}})
        return {"bool": {"filter": clauses, "must_not": [{"term": {"type": SNAPSHOT_TYPE}}]}}

    def series(
        self,
        recordsets: Sequence[str],
        first: date | None,
        last: date | None,
        interval: str,
        by_recordset: bool = True,
    ) -> list[dict[str, Any]]:
        self._require_indexes()
        sums: dict[str, Any] = {
            f"{rt}.{ty}.{f}": {"sum": {"field": f"{rt}.{ty}.{f}"}} for rt, ty, f in COUNT_FIELDS
        }
        inner: dict[str, Any]
        size = len(recordsets) or SERIES_RECORDSETS
        if by_recordset:
            # All recordsets: up to SERIES_RECORDSETS buckets; more is an error, never a silent cut.
            inner = {"rs": {"terms": {"field": "recordset_id", "size": size}, "aggs": sums}}
        else:
            inner = sums
        body = {
            "size": 0,
            "query": self._filter(recordsets, first, last),
            "aggs": {
                "period": {
                    "date_histogram": {
                        "field": "harvest_date",
                        "calendar_interval": interval,
                        "min_doc_count": 1,
                    },
                    "aggs": inner,
                }
            },
        }
        response = self.http.request("POST", f"/{quote(self.daily)}/_search", body)
        rows = []
        for period in response["aggregations"]["period"]["buckets"]:
            day = date.fromisoformat(period["key_as_string"][:10])
            if by_recordset and period["rs"].get("sum_other_doc_count", 0):
                raise StoreError(f"a series of more than {size} recordsets per period: ask in smaller groups")
            buckets = period["rs"]["buckets"] if by_recordset else [dict(period, key=None)]
            for bucket in buckets:
                row: dict[str, Any] = {"period": day, "recordset_id": bucket["key"]}
                row.update({name: int(bucket[name]["value"]) for name in sums})
                rows.append(row)
        rows.sort(key=lambda r: (r["period"], r["recordset_id"] or ""))
        return rows

    def top_countries(
        self,
        recordsets: Sequence[str],
        first: date | None,
        last: date | None,
        limit: int,
        by_recordset: bool = False,
    ) -> list[dict[str, Any]]:
        self._require_indexes()
        aggs: dict[str, Any] = {
            f"{rt}.{ty}": {
                "nested": {"path": f"{rt}.{ty}.geocodes"},
                "aggs": {
                    "c": {
                        "terms": {"field": f"{rt}.{ty}.geocodes.geo.country", "size": 1000, "missing": ""},
                        "aggs": {"hits": {"sum": {"field": f"{rt}.{ty}.geocodes.count"}}},
                    }
                },
            }
            for rt, ty in BLOCKS
        }
        if by_recordset:
            size = len(recordsets) or SERIES_RECORDSETS
            aggs = {"rs": {"terms": {"field": "recordset_id", "size": size}, "aggs": aggs}}
        body = {"size": 0, "query": self._filter(recordsets, first, last), "aggs": aggs}
        response = self.http.request("POST", f"/{quote(self.daily)}/_search", body)["aggregations"]
        groups = [(b["key"], b) for b in response["rs"]["buckets"]] if by_recordset else [(None, response)]
        rows = []
        for recordset_id, group in groups:
            hits: dict[str, int] = {}
            for rt, ty in BLOCKS:
                for bucket in group[f"{rt}.{ty}"]["c"]["buckets"]:
                    country = bucket["key"] or UNKNOWN_COUNTRY
                    hits[country] = hits.get(country, 0) + int(bucket["hits"]["value"])
            ranked = by_count(hits)[:limit]
            rows += [{"recordset_id": recordset_id, "country": c, "hits": n} for c, n in ranked]
        if not by_recordset:
            return [{"country": r["country"], "hits": r["hits"]} for r in rows]
        return sorted(rows, key=lambda r: r["recordset_id"])

    def top_terms(
        self, recordset_id: str, first: date | None, last: date | None, limit: int
    ) -> dict[str, list[dict[str, Any]]]:
        # Items and queries are stored, not indexed (see init): they are summed here, reading only
        # those lists of the recordset's days.
        self._require_indexes()
        source = [f"{rt}.{ty}.{kind}" for rt, ty in BLOCKS for kind in ("items", "queries")]
        sums: dict[str, dict[str, int]] = {"items": {}, "queries": {}}
        query = self._filter([recordset_id], first, last)
        for hit in self._scan(self.daily, query, [{"harvest_date": "asc"}], source):
            add_terms(hit["_source"], sums)
        return {
            kind: [{"term": term, "count": n} for term, n in by_count(counts)[:limit]]
            for kind, counts in sums.items()
        }

    # --- adopting an index the original collector wrote (see adopt.py) -------------------------

    def index_state(self, name: str) -> tuple[str, list[str]]:
        """("alias", [indexes]), ("index", []) or ("absent", []): see RetryingRequests.index_state."""
        return self.http.index_state(name)

    def count(self, index: str) -> int:
        self._refresh(index)
        return int(self.http.request("GET", f"/{quote(index)}/_count")["count"])

    def replace_index_with_alias(
        self, name: str, target: str, api_index: str, state: str, behind: Sequence[str]
    ) -> None:
        """In one atomic request, make `name` an alias of `target` (its write index) and of the
        record-count index, so the portal's one name answers all four of its query kinds; `name`
        stops being what it was (state): an index (deleted: an alias cannot take a live index's
        name), an alias of the original's indexes (moved: those are kept), or nothing. Readers see the old
        documents until the moment they see the new ones."""
        actions: list[dict[str, Any]] = [
            {"add": {"index": target, "alias": name, "is_write_index": True}},
            {"add": {"index": api_index, "alias": name}},
        ]
        if state == "alias":
            actions += [{"remove": {"index": old, "alias": name}} for old in behind]
        elif state == "index":
            actions.append({"remove_index": {"index": name}})
        self.http.request("POST", "/_aliases", {"actions": actions})

    def close(self) -> None:
        self.http.close()
