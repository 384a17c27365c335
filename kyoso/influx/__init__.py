"""InfluxDB: the HTTP client (line protocol writes, InfluxQL queries) and the storage schema
(which measurement, tags and fields each message becomes). Used by the store, the ingest,
the capacity API's snapshots, the regional set-up and the demo; it imports only the
contract. The layout is described in docs/storage.md."""
