"""llmrec-platform: LLM-enhanced personalized recommendation on Dagster, DuckDB and MLflow."""

__version__ = "0.1.0"
