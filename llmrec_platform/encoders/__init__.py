"""Encoders: the model registry, the embedding cache, user interest vectors and fine-tuning (no Dagster)."""
