"""llmrec-platform: LLM-enhanced personalized recommendation on Dagster, DuckDB and MLflow."""

from llmrec_platform.kernels import pin_cpu_kernels

# Before any module loads numpy or torch: they read their kernel choice once (see kernels.py).
pin_cpu_kernels()

__version__ = "0.1.0"

__all__ = ["load_ranker"]


def __getattr__(name: str):
    # Lazy, so `import llmrec_platform` stays cheap (the CLI imports it before parsing arguments).
    if name == "load_ranker":
        from llmrec_platform.rankers.published import load_ranker

        return load_ranker
    raise AttributeError(f"module 'llmrec_platform' has no attribute {name!r}")
