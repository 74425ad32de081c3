"""The OpenSearch store (opensearch-py): the client wrapped as a transport; the store logic lives
in search.py."""

from __future__ import annotations

from typing import Any

from ..config import Config
from .search import SearchStore
from .transport import HTTPFailure, Unreachable, client_options, error_detail


class OpenSearchStore(SearchStore):
    kind = "opensearch"


class OpenSearchTransport:
    """One request through an OpenSearch client, its errors as HTTPFailure/Unreachable."""

    def __init__(self, client: Any):
        self.client = client

    def send(self, method: str, path: str, params: dict[str, Any] | None, body: Any, ndjson: bool) -> Any:
        from opensearchpy import ConnectionError, TransportError

        headers = {"content-type": "application/x-ndjson"} if ndjson else None
        try:
            return self.client.transport.perform_request(
                method, path, params=params, body=body, headers=headers
            )
        except ConnectionError as exc:
            raise Unreachable(str(exc.error or exc)) from None
        except TransportError as exc:
            raise HTTPFailure(int(exc.status_code), error_detail(exc.info or exc.error)) from None

    def close(self) -> None:
        self.client.close()


def build_client(config: Config) -> Any:
    from opensearchpy import OpenSearch

    options = client_options(config, "timeout")
    if config.store_api_key:
        options["headers"] = {"Authorization": f"ApiKey {config.store_api_key}"}
    elif config.store_username:
        options["http_auth"] = (config.store_username, config.store_password or "")
    return OpenSearch(hosts=[config.store_url], **options)


def open_opensearch(config: Config) -> OpenSearchStore:
    return OpenSearchStore(config, OpenSearchTransport(build_client(config)))
