"""The Dagster code location: assets, jobs and resources (`dagster dev -w workspace.yaml`)."""

import dagster as dg

from llmrec_platform.assets import ablation, embeddings, evaluation, finetune, ingest, rankers, serving, split, text
from llmrec_platform.data.config import config_encoder
from llmrec_platform.orchestration import (
    ASSET_CHECKS,
    build_nightly_retrain_schedule,
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
from llmrec_platform.settings import Settings

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
                                                      finetune])
] + ASSET_CHECKS


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
    return {
        "io_manager": WarehouseIOManager(path=warehouse_path),
        "artifacts_io": dg.FilesystemIOManager(base_dir=str(home.artifacts)),
        "warehouse": WarehouseResource(path=warehouse_path),
        "dataset": DatasetResource(source=dataset or settings.dataset),
        "experiment": ExperimentResource(protocol=protocol or settings.protocol, cold_items=cold_items, seed=seed,
                                         champion_tolerance=settings.champion_tolerance),
        "device": DeviceResource(device=settings.device if device == "auto" else device),
        # A dataset config may name its encoder (`encoder:`); otherwise the platform default.
        "encoder": EncoderResource(**({"model": m} if (m := config_encoder(dataset or settings.dataset)) else {})),
        "tracking": TrackingResource(home=str(home.home)),
        "home": HomeResource(path=str(home.home)),
        "events": EventLogResource(folder=str(home.events), max_batch=settings.events_batch,
                                   event_weights=dict(settings.event_weights)),
    }


# The default graph leaves out the fine-tuning branch (minutes on a CPU); it has a job of its own.
DEFAULT_SELECTION = dg.AssetSelection.all() - dg.AssetSelection.groups(finetune.FINETUNE_GROUP)

full_pipeline_job = dg.define_asset_job(
    "full_pipeline", selection=DEFAULT_SELECTION,
    description="Ingest, embed, train, evaluate and publish recommendations (all ratings partitions in one run).",
)

# `llmrec demo --fast`: the same graph without the hybrid ablation (two more hybrid fits, half the ML-100K demo).
fast_pipeline_job = dg.define_asset_job(
    "fast_pipeline", selection=DEFAULT_SELECTION - dg.AssetSelection.assets("hybrid_ablation"),
    description="full_pipeline without the hybrid ablation: the same rankers, metrics and recommendations.",
)

finetune_encoder_job = dg.define_asset_job(
    "finetune_encoder", selection=dg.AssetSelection.groups(finetune.FINETUNE_GROUP),
    description="Fine-tune the encoder on the current split (asks for the GPU), then compare frozen and "
                "fine-tuned content rankers on every slice.",
)

JOBS = [full_pipeline_job, fast_pipeline_job, finetune_encoder_job, ingest_ratings_job, nightly_retrain_job,
        ingest_landed_file_job, events_refresh_job]


def build_definitions(resources: dict | None = None, settings: Settings | None = None) -> dg.Definitions:
    """The code location; `settings` default to the environment (read once, here), `resources` to
    `build_resources(settings=settings)` (tests pass their own home)."""
    settings = settings or Settings.from_env()
    return dg.Definitions(
        assets=ALL_ASSETS,
        jobs=JOBS,
        schedules=[build_nightly_retrain_schedule(settings), monthly_ingest_schedule],
        sensors=[landing_sensor, events_sensor],
        resources=resources if resources is not None else build_resources(settings=settings),
    )


defs = build_definitions()
