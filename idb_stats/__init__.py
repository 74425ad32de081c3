"""idb-stats: daily per-recordset usage statistics from search API telemetry."""

__version__ = "0.1.0"
