"""Differential privacy for the aggregates the platform releases (see llmrec_platform.privacy.dp)."""
