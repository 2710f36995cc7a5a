"""Rating prediction (explicit ratings, RMSE / MAE): models, LLM stacker features and Surprise's k-fold protocol.
No Dagster here: `llmrec_platform.assets.rating` wraps it."""
