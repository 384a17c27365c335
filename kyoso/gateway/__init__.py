"""The edge gateway: reads machines, keeps every sample in a durable outbox, publishes it."""
