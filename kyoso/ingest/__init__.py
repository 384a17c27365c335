"""The ingest: MQTT to the store, at least once, idempotent, with a dead-letter path."""
