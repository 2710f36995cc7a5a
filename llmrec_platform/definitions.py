"""The Dagster code location: assets, jobs and resources (`dagster dev -w workspace.yaml`)."""

import dagster as dg

from llmrec_platform.assets import (
    ablation,
    descriptions,
    embeddings,
    evaluation,
    finetune,
    ingest,
    rankers,
    rating,
    serving,
    split,
    text,
)
from llmrec_platform.data.config import config_encoder, config_pseudonymize, config_user_text_weight
from llmrec_platform.data.datasets import DatasetError
from llmrec_platform.data.duck import set_memory_limit
from llmrec_platform.data.privacy import missing_key_message
from llmrec_platform.orchestration import (
    ASSET_CHECKS,
    build_nightly_retrain_schedule,
    erasure_refit_sensor,
    events_refresh_job,
    events_sensor,
    ingest_landed_file_job,
    ingest_ratings_job,
    landing_sensor,
    monthly_ingest_schedule,
    nightly_retrain_job,
)
from llmrec_platform.paths import Paths
from llmrec_platform.resources import (
    ComputeResource,
    DatasetResource,
    DeviceResource,
    EncoderResource,
    EventLogResource,
    ExperimentResource,
    HomeResource,
    TrackingResource,
    WarehouseIOManager,
    WarehouseResource,
)
from llmrec_platform.settings import DP_SEED_ENV, PSEUDONYM_KEY_ENV, Settings
from llmrec_platform.threads import pin_blas_threads

# Catalogue-derived assets follow their inputs at once (the default automation sensor, when turned on,
# launches them); everything computed from ratings is refreshed by the nightly retrain instead, so the
# rankers and the recommendations always share one split.
EAGER_ASSETS = {"item_texts", "user_texts", "item_embeddings"}


def _automate(assets_def):
    if not isinstance(assets_def, dg.AssetsDefinition) or not {k.to_user_string() for k in assets_def.keys} & EAGER_ASSETS:
        return assets_def
    return assets_def.map_asset_specs(
        lambda spec: spec.replace_attributes(automation_condition=dg.AutomationCondition.eager())
        if spec.key.to_user_string() in EAGER_ASSETS else spec
    )


# The assets and their checks (`dg.materialize(ALL_ASSETS)` runs the checks too, so the blocking champion
# gate guards every publication, `llmrec demo` included).
ALL_ASSETS = [
    _automate(a) for a in dg.load_assets_from_modules([ingest, text, split, embeddings, rankers, evaluation, ablation, serving,
                                                      finetune, descriptions, rating])
] + ASSET_CHECKS


def all_assets(settings: Settings) -> list:
    """ALL_ASSETS; with LLMREC_ITEM_DESCRIPTIONS=1, `item_texts` takes `item_descriptions` as an input."""
    if not settings.item_descriptions:
        return ALL_ASSETS
    item_texts_key = {dg.AssetKey("item_texts")}
    return [_automate(text.item_texts_with_descriptions())
            if isinstance(a, dg.AssetsDefinition) and set(a.keys) == item_texts_key else a for a in ALL_ASSETS]


def build_resources(
    home: Paths | None = None,
    dataset: str | None = None,
    protocol: str | None = None,
    cold_items: float = 0.0,
    device: str = "auto",
    seed: int = 2020,
    settings: Settings | None = None,
) -> dict:
    """Resources for a home folder: every path the graph touches is under `home`. What is not passed
    comes from `settings` (default: read from the environment now): the home, LLMREC_DATASET,
    LLMREC_PROTOCOL, LLMREC_DEVICE (when `device` is auto), the champion tolerance and the events batch."""
    settings = settings or Settings.from_env()
    home = home or settings.paths
    warehouse_path = str(home.warehouse)
    source = dataset or settings.dataset
    pseudonymize = settings.pseudonymize or config_pseudonymize(source)
    if pseudonymize and not settings.pseudonym_key:  # refuse before any run starts
        raise DatasetError(missing_key_message(f"privacy.pseudonymize in {source}", PSEUDONYM_KEY_ENV))
    return {
        "io_manager": WarehouseIOManager(path=warehouse_path),
        "artifacts_io": dg.FilesystemIOManager(base_dir=str(home.artifacts)),
        "warehouse": WarehouseResource(path=warehouse_path),
        # The key travels as an EnvVar: Dagster stores its name, never its value.
        "dataset": DatasetResource(source=source, pseudonymize=pseudonymize,
                                   pseudonym_key=dg.EnvVar(PSEUDONYM_KEY_ENV) if pseudonymize else None),
        "experiment": ExperimentResource(protocol=protocol or settings.protocol, cold_items=cold_items, seed=seed,
                                         fit_cache=str(home.fit_cache) if settings.fit_cache else None,
                                         dense_max_items=settings.dense_max_items,
                                         ann_min_items=settings.ann_min_items,
                                         champion_tolerance=settings.champion_tolerance,
                                         # a dataset config's user_texts.weight, else LLMREC_USER_TEXT_WEIGHT
                                         user_text_weight=settings.user_text_weight if (
                                             w := config_user_text_weight(source)) is None else w,
                                         # differential privacy of released aggregates; the seed, a secret, as an EnvVar
                                         dp_epsilon=None if settings.count_release.exact else settings.dp_epsilon,
                                         dp_mechanism=settings.dp_mechanism, dp_delta=settings.dp_delta,
                                         dp_seed=dg.EnvVar(DP_SEED_ENV) if settings.dp_seed is not None else None),
        "device": DeviceResource(device=settings.device if device == "auto" else device, precision=settings.encoder_dtype),
        # LLMREC_RAY_ADDRESS: encoding and all-user scoring on a Ray cluster; unset, in-process
        "compute": ComputeResource(ray_address=settings.ray_address or "", num_threads=settings.num_threads,
                                   cpu_kernels=settings.cpu_kernels, block_users=settings.block_users),
        "description_model": descriptions.DescriptionModelResource(model=settings.description_model),
        # A dataset config may name its encoder (`encoder:`); otherwise the platform default.
        "encoder": EncoderResource(**({"model": m} if (m := config_encoder(dataset or settings.dataset)) else {}),
                                   backend=settings.encoder_backend, cache_dir=str(home.encoder_cache)),
        "tracking": TrackingResource(home=str(home.home)),
        "home": HomeResource(path=str(home.home)),
        "events": EventLogResource(folder=str(home.events), max_batch=settings.events_batch,
                                   event_weights=dict(settings.event_weights)),
    }


# The default graph leaves out the fine-tuning branch (minutes on a CPU); it has a job of its own.
# What item_texts reads stays in (item_descriptions, with LLMREC_ITEM_DESCRIPTIONS=1).
DEFAULT_SELECTION = dg.AssetSelection.all() - (
    dg.AssetSelection.groups(finetune.FINETUNE_GROUP) - dg.AssetSelection.assets("item_texts").upstream()
) - dg.AssetSelection.groups(rating.RATING_GROUP)  # rating prediction is a task of its own (rating_pipeline)

full_pipeline_job = dg.define_asset_job(
    "full_pipeline", selection=DEFAULT_SELECTION,
    description="Ingest, embed, train, evaluate and publish recommendations (all ratings partitions in one run).",
)

# `llmrec demo --fast`: no hybrid ablation, and a hybrid of one LambdaRank model without pseudo-labels (no base
# ranker refits): what costs the most time for the least NDCG (the measured cost is in the README).
FAST_RUN_CONFIG = {"ops": {"hybrid_ranker": {"config": {"n_models": 1, "pseudo_label_share": 0.0}}}}
fast_pipeline_job = dg.define_asset_job(
    "fast_pipeline", selection=DEFAULT_SELECTION - dg.AssetSelection.assets("hybrid_ablation"), config=FAST_RUN_CONFIG,
    description="full_pipeline without the hybrid ablation, with a one-model hybrid trained on the validation fold "
                "only (no pseudo-labels): the same rankers otherwise.",
)

finetune_encoder_job = dg.define_asset_job(
    "finetune_encoder",
    selection=dg.AssetSelection.groups(finetune.FINETUNE_GROUP) - dg.AssetSelection.assets("item_descriptions"),
    description="Fine-tune the encoder on the current split (asks for the GPU), then compare frozen and "
                "fine-tuned content rankers on every slice.",
)

describe_items_job = dg.define_asset_job(
    "describe_items", selection=dg.AssetSelection.assets("item_descriptions"),
    description="Write two sentences per item with a local instruct model (asks for the GPU; cached by prompt hash). "
                "LLMREC_ITEM_DESCRIPTIONS=1 adds them to the item text.",
)

# `llmrec demo --task rating`: Surprise's k-fold rating protocol and what it reads (ratings, item and profile texts).
rating_pipeline_job = dg.define_asset_job(
    "rating_pipeline", selection=dg.AssetSelection.groups(rating.RATING_GROUP).upstream(),
    description="Rating prediction: k random folds over all ratings (seeded), baseline, biased MF, SVD++ and a "
                "LightGBM stacker with and without LLM features; RMSE / MAE to rating_metrics, MLflow and a report.",
)

JOBS = [full_pipeline_job, fast_pipeline_job, finetune_encoder_job, describe_items_job, ingest_ratings_job, nightly_retrain_job,
        ingest_landed_file_job, events_refresh_job, rating_pipeline_job]


def build_definitions(resources: dict | None = None, settings: Settings | None = None) -> dg.Definitions:
    """The code location; `settings` default to the environment (read once, here), `resources` to
    `build_resources(settings=settings)` (tests pass their own home)."""
    settings = settings or Settings.from_env()
    pin_blas_threads(settings.num_threads)  # every process that loads the code location: UI, daemon, run steps
    set_memory_limit(settings.duckdb_memory_limit)  # every DuckDB session of the data path, in those processes
    return dg.Definitions(
        assets=all_assets(settings),
        jobs=JOBS,
        schedules=[build_nightly_retrain_schedule(settings), monthly_ingest_schedule],
        sensors=[landing_sensor, events_sensor, erasure_refit_sensor],
        resources=resources if resources is not None else build_resources(settings=settings),
    )


defs = build_definitions()
