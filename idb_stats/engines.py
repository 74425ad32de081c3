"""The telemetry source of the configured aggregation engine (collect.engine)."""

from __future__ import annotations

from .config import Config
from .source import PostgresTelemetrySource


def open_source(config: Config) -> PostgresTelemetrySource:
    """Both engines read the same telemetry database and list days and fingerprints alike; they
    differ in how a day is aggregated (read_day)."""
    if config.engine == "stream":
        # Imported here: DuckDB is loaded only by runs that use it.
        from .stream import StreamTelemetrySource

        return StreamTelemetrySource(config)
    return PostgresTelemetrySource(config)
