"""Statistics stores. Each kind lives in its own module; open_store picks one by name."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..config import Config
from ..errors import ConfigError
from ..ports import Store

if TYPE_CHECKING:  # mypy checks every backend against the protocol; at run time only one is imported
    from .elasticsearch import ElasticsearchStore
    from .memory import MemoryStore
    from .opensearch import OpenSearchStore
    from .postgres import PostgresStore

    BACKENDS: tuple[type[Store], ...] = (PostgresStore, ElasticsearchStore, OpenSearchStore, MemoryStore)

# kind -> "module:factory", imported on demand so a deployment needs only its store's client.
STORE_FACTORIES = {
    "postgres": "idb_stats.stores.postgres:PostgresStore",
    "elasticsearch": "idb_stats.stores.elasticsearch:open_elasticsearch",
    "opensearch": "idb_stats.stores.opensearch:open_opensearch",
    # Tests and library code only: load_config refuses it (see stores/memory.py for why).
    "memory": "idb_stats.stores.memory:open_memory",
}


# kind -> the client module it imports and the pip extra that installs it.
CLIENTS = {"elasticsearch": ("elasticsearch", "elasticsearch"), "opensearch": ("opensearchpy", "opensearch")}


def open_store(config: Config) -> Store:
    if config.store in CLIENTS:
        _require_client(config.store, *CLIENTS[config.store])
    module_name, factory = STORE_FACTORIES[config.store].split(":")
    store: Store = getattr(importlib.import_module(module_name), factory)(config)
    return store


def _require_client(kind: str, module: str, extra: str) -> None:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise ConfigError(
            [
                f"store.kind = {kind}: its client ({module}) is not installed; "
                f"pip install 'idb-stats[{extra}]' (deploy/install.sh --extras {extra})"
            ]
        ) from None
