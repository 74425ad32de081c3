"""The Elasticsearch store (official client, 8.x and 9.x servers): the client wrapped as a
transport; the store logic lives in search.py."""

from __future__ import annotations

from typing import Any

from ..config import Config
from .search import SearchStore
from .transport import HTTPFailure, Unreachable, client_options, error_detail


class ElasticsearchStore(SearchStore):
    kind = "elasticsearch"


class ElasticsearchTransport:
    """One request through an Elasticsearch client, its errors as HTTPFailure/Unreachable."""

    def __init__(self, client: Any):
        self.client = client

    def send(self, method: str, path: str, params: dict[str, Any] | None, body: Any, ndjson: bool) -> Any:
        from elasticsearch import ApiError, TransportError

        kind = "x-ndjson" if ndjson else "json"
        headers = (
            {"accept": "application/json", "content-type": f"application/{kind}"}
            if body is not None
            else {"accept": "application/json"}
        )
        try:
            response = self.client.perform_request(method, path, params=params, headers=headers, body=body)
        except ApiError as exc:
            raise HTTPFailure(exc.meta.status, error_detail(exc.body)) from None
        except TransportError as exc:
            raise Unreachable(str(exc)) from None
        return 200 <= response.meta.status < 300 if method == "HEAD" else response.body

    def close(self) -> None:
        self.client.close()


def build_client(config: Config) -> Any:
    from elasticsearch import Elasticsearch

    options = client_options(config, "request_timeout")
    if config.store_api_key:
        options["api_key"] = config.store_api_key
    elif config.store_username:
        options["basic_auth"] = (config.store_username, config.store_password or "")
    return Elasticsearch(config.store_url, **options)


def open_elasticsearch(config: Config) -> ElasticsearchStore:
    return ElasticsearchStore(config, ElasticsearchTransport(build_client(config)))
