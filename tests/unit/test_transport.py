"""The retrying layer every search store shares (stores/transport.py), driven through a scripted
transport the way httpx's MockTransport stands in for a network: each request is answered by a
handler the test writes, so retries, backoff and bulk splitting are checked exactly and in
milliseconds. The stores' behaviour against a real HTTP server is tested elsewhere (osmem)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idb_stats.errors import StoreError, StoreUnreachable
from idb_stats.stores.transport import (
    RETRY_STATUSES,
    BulkAction,
    HTTPFailure,
    RetryingRequests,
    Unreachable,
    check_bulk,
    error_detail,
)

Handler = Callable[[str, str, Any], Any]


@dataclass
class ScriptedTransport:
    """A SearchTransport whose answers come from `handler`; records every request it is sent."""

    handler: Handler
    sent: list[tuple[str, str, Any]] = field(default_factory=list)
    slept: list[float] = field(default_factory=list)  # the backoff, recorded instead of slept
    closed: bool = False

    def send(self, method: str, path: str, params: dict[str, Any] | None, body: Any, ndjson: bool) -> Any:
        self.sent.append((method, path, body))
        return self.handler(method, path, body)

    def close(self) -> None:
        self.closed = True


def requests_through(handler: Handler, retries: int = 3, chunk_bytes: int = 1 << 20) -> RetryingRequests:
    transport = ScriptedTransport(handler)
    http = RetryingRequests(transport, "opensearch", retries, chunk_bytes)
    http.sleep = transport.slept.append
    return http


def failing(times: int, failure: Exception, answer: Any = None) -> Handler:
    calls = {"n": 0}

    def handler(method: str, path: str, body: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            raise failure
        return answer if answer is not None else {"acknowledged": True}

    return handler


def transport_of(http: RetryingRequests) -> ScriptedTransport:
    assert isinstance(http.transport, ScriptedTransport)
    return http.transport


@pytest.mark.parametrize("status", sorted(RETRY_STATUSES))
def test_a_retryable_status_is_retried_with_growing_backoff_until_it_succeeds(status: int) -> None:
    http = requests_through(failing(3, HTTPFailure(status, "busy")), retries=3)
    assert http.request("GET", "/x") == {"acknowledged": True}
    assert len(transport_of(http).sent) == 4
    # 0.1 s, 0.2 s, 0.4 s, each with up to half of it taken off as jitter.
    for attempt, slept in enumerate(transport_of(http).slept):
        assert 0.05 * 2**attempt <= slept <= 0.1 * 2**attempt


def test_retries_give_up_after_the_limit_naming_the_store_and_request() -> None:
    http = requests_through(failing(10, HTTPFailure(503, "still busy")), retries=2)
    with pytest.raises(StoreError, match=r"^opensearch GET /x: HTTP 503: still busy$"):
        http.request("GET", "/x")
    assert len(transport_of(http).sent) == 3 and len(transport_of(http).slept) == 2


def test_no_answer_is_retried_then_reported_as_unreachable() -> None:
    http = requests_through(failing(10, Unreachable("connection refused")), retries=1)
    with pytest.raises(StoreUnreachable, match="opensearch store unreachable: connection refused"):
        http.request("POST", "/_search", {"query": {}})
    assert len(transport_of(http).sent) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500])
def test_a_status_not_worth_retrying_fails_at_once_unless_it_is_expected(status: int) -> None:
    http = requests_through(failing(1, HTTPFailure(status, "no")))
    with pytest.raises(StoreError, match=f"HTTP {status}"):
        http.request("PUT", "/index")
    assert len(transport_of(http).sent) == 1 and transport_of(http).slept == []
    expected = requests_through(failing(1, HTTPFailure(status, "no")))
    assert expected.request("HEAD", "/index", ok=(status,)) is None


def test_backoff_is_capped_at_ten_seconds() -> None:
    http = requests_through(failing(0, HTTPFailure(503, "")))
    for attempt in range(12):
        http.backoff(attempt)
    assert max(transport_of(http).slept) <= 10.0 and transport_of(http).slept[-1] >= 5.0


def bulk_answer(statuses: Callable[[int, dict[str, Any]], int]) -> Handler:
    """Answer each bulk item with statuses(call number, metadata); other requests acknowledged."""
    calls = {"n": 0}

    def handler(method: str, path: str, body: Any) -> Any:
        assert (method, path) == ("POST", "/_bulk")
        calls["n"] += 1
        items = []
        lines = iter(body.splitlines())
        for line in lines:
            meta = json.loads(line)
            ((op, target),) = meta.items()
            if op != "delete":
                next(lines)  # the source line
            items.append({op: {"_id": target["_id"], "status": statuses(calls["n"], target)}})
        return {"errors": any(next(iter(i.values()))["status"] >= 300 for i in items), "items": items}

    return handler


def actions(count: int, size: int = 10) -> list[BulkAction]:
    return [({"index": {"_index": "stats", "_id": f"d{i}"}}, {"pad": "x" * size}) for i in range(count)]


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=40),
    chunk_bytes=st.integers(min_value=1, max_value=2000),
)
def test_bulk_sends_every_action_once_in_order_in_chunks_of_the_configured_size(
    sizes: list[int], chunk_bytes: int
) -> None:
    http = requests_through(bulk_answer(lambda call, meta: 201), chunk_bytes=chunk_bytes)
    sent_actions: list[BulkAction] = [
        ({"index": {"_index": "stats", "_id": f"d{i}"}}, {"pad": "x" * n}) for i, n in enumerate(sizes)
    ]
    results = http.bulk(sent_actions)
    assert [r["_id"] for r in results] == [f"d{i}" for i in range(len(sizes))]
    bodies = [body for _, _, body in transport_of(http).sent]
    ids = [json.loads(line)["index"]["_id"] for body in bodies for line in body.splitlines()[::2]]
    assert ids == [f"d{i}" for i in range(len(sizes))]
    largest_action = max(
        len(json.dumps(m)) + len(json.dumps(s, separators=(",", ":"))) + 2 for m, s in sent_actions
    )
    for body in bodies[:-1]:  # a chunk is closed by the action that reaches the size
        assert len(body.encode()) >= chunk_bytes
    for body in bodies:
        assert len(body.encode()) < chunk_bytes + largest_action


def test_bulk_items_refused_with_a_retryable_status_are_resent_alone() -> None:
    # d1 and d3 are refused (429) on the first attempt only.
    http = requests_through(
        bulk_answer(lambda call, meta: 429 if call == 1 and meta["_id"] in ("d1", "d3") else 201)
    )
    results = http.bulk(actions(5))
    assert [r["status"] for r in results] == [201] * 5
    first, second = (body for _, _, body in transport_of(http).sent)
    assert [json.loads(x)["index"]["_id"] for x in second.splitlines()[::2]] == ["d1", "d3"]
    assert len(first.splitlines()) == 10 and len(transport_of(http).slept) == 1


def test_bulk_items_still_refused_after_the_retries_fail_the_request() -> None:
    http = requests_through(bulk_answer(lambda call, meta: 503 if meta["_id"] == "d2" else 201), retries=2)
    with pytest.raises(StoreError, match="1 bulk items still refused after 3 attempts"):
        http.bulk(actions(4))


def test_deletes_have_no_source_line_and_a_failed_item_is_not_retried_but_reported() -> None:
    http = requests_through(bulk_answer(lambda call, meta: 404 if meta["_id"] == "gone" else 200))
    results = http.bulk([({"delete": {"_index": "stats", "_id": "gone"}}, None), *actions(1)])
    assert len(transport_of(http).sent) == 1
    ((_, _, body),) = transport_of(http).sent
    assert body.count("\n") == 3  # delete: one line; index: two
    check_bulk(results, allowed=(404,))
    with pytest.raises(StoreError, match=r"1 bulk items not acknowledged, e.g. gone: 404"):
        check_bulk(results)


def test_an_error_body_is_told_by_its_root_cause_in_one_line() -> None:
    body = {
        "error": {
            "type": "search_phase_execution_exception",
            "reason": "all shards failed",
            "root_cause": [{"type": "query_shard_exception", "reason": "No mapping found for [x]"}],
        }
    }
    assert (
        error_detail(body) == "search_phase_execution_exception: No mapping found for [x]: all shards failed"
    )
    assert error_detail(json.dumps(body).encode()) == error_detail(body)
    assert error_detail("<html>bad gateway</html>") == "<html>bad gateway</html>"
    assert len(error_detail("x" * 5000)) == 500


def test_closing_the_requests_closes_the_transport() -> None:
    http = requests_through(failing(0, HTTPFailure(500, "")))
    http.close()
    assert transport_of(http).closed
