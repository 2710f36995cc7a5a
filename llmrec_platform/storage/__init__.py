"""Storage: the DuckDB warehouse and MLflow tracking (no Dagster)."""
