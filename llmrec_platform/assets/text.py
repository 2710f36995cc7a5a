"""Texts the language model reads."""

import dagster as dg
import pandas as pd

from llmrec_platform.data.text import build_item_texts, build_user_texts


@dg.asset(metadata={"table": "item_texts"}, group_name="text", kinds={"duckdb"})
def item_texts(context: dg.AssetExecutionContext, raw_items: pd.DataFrame) -> pd.DataFrame:
    """"Title (Year). Genres: ..." enriched with OMDb director, cast, writer, language and country."""
    texts, match_rate = build_item_texts(raw_items)
    context.add_output_metadata({
        "omdb_match_rate": dg.MetadataValue.float(round(match_rate, 4)),
        "example": dg.MetadataValue.text(texts["text"].iloc[0] if len(texts) else ""),
    })
    return texts


@dg.asset(metadata={"table": "user_texts"}, group_name="text", kinds={"duckdb"})
def user_texts(context: dg.AssetExecutionContext, raw_users: pd.DataFrame) -> pd.DataFrame:
    """A readable profile per user from demographics."""
    texts = build_user_texts(raw_users)
    context.add_output_metadata({"example": dg.MetadataValue.text(texts["text"].iloc[0] if len(texts) else "")})
    return texts
