"""`llmrec`: run the whole graph in-process, or open the Dagster / MLflow UIs."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from llmrec_platform.paths import Paths
from llmrec_platform.settings import Settings, SettingsError


class CliError(Exception):
    pass


def dataset_months(dataset: str) -> tuple[str, str]:
    """First and last monthly partition keys that hold the dataset's ratings."""
    from llmrec_platform.assets.partitions import monthly_partitions
    from llmrec_platform.data.datasets import load_dataset_cached

    timestamps = load_dataset_cached(dataset).ratings["timestamp"]
    keys = monthly_partitions.get_partition_keys()
    first = pd.Timestamp(int(timestamps.min()), unit="s").strftime("%Y-%m-01")
    last = pd.Timestamp(int(timestamps.max()), unit="s").strftime("%Y-%m-01")
    if first < keys[0] or last > keys[-1]:
        raise CliError(f"ratings of {dataset} span {first} .. {last}, outside the partitions {keys[0]} .. {keys[-1]}")
    return first, last


def dagster_env(paths: Paths) -> dict[str, str]:
    """The environment of a child process that opens the platform's Dagster instance (<home>/dagster)."""
    return {**os.environ, "DAGSTER_HOME": str(paths.dagster_home)}


def run_pipeline(dataset: str, protocol: str, cold_items: float = 0.0, device: str = "auto", seed: int = 2020,
                 finetune: bool = False, log_level: str = "WARNING", settings: Settings | None = None):
    """Materialize the graph (all ratings partitions in one run) on the persistent Dagster instance
    of the settings' home (default: read from the environment)."""
    from llmrec_platform.data.datasets import load_dataset_cached

    load_dataset_cached(dataset)  # fail fast with one clear line, before Dagster starts
    settings = settings or Settings.from_env()
    paths = settings.paths.ensure()
    import dagster as dg

    from llmrec_platform.definitions import ALL_ASSETS, DEFAULT_SELECTION, build_resources

    first, last = dataset_months(dataset)
    result = dg.materialize(
        ALL_ASSETS,
        selection=dg.AssetSelection.all() if finetune else DEFAULT_SELECTION,
        instance=dg.DagsterInstance.from_config(str(paths.dagster_home)),
        resources=build_resources(paths, dataset=dataset, protocol=protocol, cold_items=cold_items,
                                  device=device, seed=seed, settings=settings),
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last,
              "llmrec/dataset": dataset, "llmrec/protocol": protocol},
        run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
        raise_on_error=False,
    )
    if not result.success:
        failures = [e.message for e in result.all_events if e.is_failure]
        raise CliError("pipeline failed: " + (failures[-1] if failures else "see the Dagster logs"))
    return paths, result


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from llmrec_platform.evaluation.report import format_table, metrics_table

    start = time.perf_counter()
    paths, result = run_pipeline(args.dataset, args.protocol, args.cold_items, args.device, args.seed,
                                 finetune=args.finetune, log_level="DEBUG" if args.verbose else "WARNING",
                                 settings=settings)
    report = result.output_for_node("evaluation_report")
    metrics = report["metrics"]
    for slice_name in sorted(metrics["slice"].unique()):
        print(f"\nTest fold, {slice_name} items ({args.dataset}, {args.protocol} protocol):\n")
        print(format_table(metrics_table(metrics, "test", slice_name)))
    if args.finetune:
        comparison = result.output_for_node("encoder_comparison")["metrics"]
        for slice_name in sorted(comparison["slice"].unique()):
            print(f"\nFrozen vs fine-tuned encoder, test fold, {slice_name} items:\n")
            print(format_table(metrics_table(comparison, "test", slice_name)))
    print(f"\nChampion (best validation NDCG@10): {report['champion']}")
    print(f"Report:    {report['report_path']}")
    print(f"Warehouse: {paths.warehouse}")
    print(f"MLflow:    {paths.mlflow_uri}  (make mlflow-ui)")
    print(f"Dagster run {result.run_id} in {paths.dagster_home}  (make ui)")
    print(f"Done in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    paths = settings.paths.ensure()
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", args.host, "-p", str(args.port)]
    return subprocess.call(command, env=dagster_env(paths))


def cmd_mlflow_ui(args: argparse.Namespace, settings: Settings) -> int:
    paths = settings.paths.ensure()
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", paths.mlflow_uri,
               "--host", args.host, "--port", str(args.port)]
    return subprocess.call(command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmrec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="materialize the whole graph in-process and print the metrics table")
    demo.add_argument("--dataset", default="ml-100k", help="ml-100k (default), ml-1m, or a GroupLens folder path")
    demo.add_argument("--protocol", default="recbole", choices=["recbole", "temporal"])
    demo.add_argument("--cold-items", type=float, default=0.0, help="fraction of items held out of training (0-0.5)")
    demo.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    demo.add_argument("--seed", type=int, default=2020)
    demo.add_argument("--finetune", action="store_true",
                      help="also fine-tune the encoder (minutes on a CPU) and compare frozen vs fine-tuned")
    demo.add_argument("--verbose", action="store_true", help="show Dagster's step-by-step log")
    demo.set_defaults(func=cmd_demo)
    for name, port, func in (("ui", 3000, cmd_ui), ("mlflow-ui", 5000, cmd_mlflow_ui)):
        sub = commands.add_parser(name, help=f"start the {'Dagster' if name == 'ui' else 'MLflow'} UI")
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=port)
        sub.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "cold_items", 0.0) and not 0.0 <= args.cold_items <= 0.5:
        print("llmrec: error: --cold-items must be between 0 and 0.5", file=sys.stderr)
        return 2
    from llmrec_platform.data.datasets import DatasetError
    from llmrec_platform.encoders.models import EncoderError

    try:
        return args.func(args, Settings.from_env())
    except (DatasetError, EncoderError, CliError, SettingsError) as exc:
        print(f"llmrec: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
