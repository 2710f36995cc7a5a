"""The live loop: the event log, the events refresh and top-k recommendations (no Dagster)."""
