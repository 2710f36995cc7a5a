"""Texts the language model reads."""

import dagster as dg
import pandas as pd

from llmrec_platform.data.text import build_item_texts, build_user_texts, with_descriptions


@dg.asset(metadata={"table": "item_texts"}, group_name="text", kinds={"duckdb"})
def item_texts(context: dg.AssetExecutionContext, raw_items: pd.DataFrame) -> pd.DataFrame:
    """"Title (Year). Genres: ..." enriched with OMDb director, cast, writer, language and country."""
    return _item_texts(context, raw_items)


def item_texts_with_descriptions() -> dg.AssetsDefinition:
    """`item_texts` with `item_descriptions` as a real input (LLMREC_ITEM_DESCRIPTIONS=1; definitions.py swaps
    it in): each kept description is appended to its item's text."""

    @dg.asset(name="item_texts", metadata={"table": "item_texts"}, group_name="text", kinds={"duckdb"})
    def described_item_texts(context: dg.AssetExecutionContext, raw_items: pd.DataFrame,
                             item_descriptions: pd.DataFrame) -> pd.DataFrame:
        """The item text of `item_texts` plus the item's generated description (when the guard kept one)."""
        return _item_texts(context, raw_items, item_descriptions)

    return described_item_texts


def _item_texts(context: dg.AssetExecutionContext, raw_items: pd.DataFrame,
                descriptions: pd.DataFrame | None = None) -> pd.DataFrame:
    texts, match_rate = build_item_texts(raw_items)
    described = {}
    if descriptions is not None:
        texts = with_descriptions(texts, descriptions)
        described = {"with_description": int((descriptions["description"] != "").sum())}
    context.add_output_metadata({
        "omdb_match_rate": dg.MetadataValue.float(round(match_rate, 4)),
        "example": dg.MetadataValue.text(texts["text"].iloc[0] if len(texts) else ""),
        **described,
    })
    return texts


@dg.asset(metadata={"table": "user_texts"}, group_name="text", kinds={"duckdb"})
def user_texts(context: dg.AssetExecutionContext, raw_users: pd.DataFrame) -> pd.DataFrame:
    """A readable profile per user from demographics."""
    texts = build_user_texts(raw_users)
    context.add_output_metadata({"example": dg.MetadataValue.text(texts["text"].iloc[0] if len(texts) else "")})
    return texts
