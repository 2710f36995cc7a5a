"""Real-time serving: the published bundle, the live service over the event log, and the HTTP API."""
