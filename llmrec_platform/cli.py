"""`llmrec`: run the whole graph on the platform's Dagster instance, or open the Dagster / MLflow UIs.

Adding a subcommand: write `add_<name>(commands)` next to the others and call it from `build_parser`. Its
options are validated by argparse `type=` functions (one line on error, with the valid choices). A command
that starts a long-running child process hands it to `run_child`, which stops it and its whole process group
on SIGINT / SIGTERM; a command that writes to the home's warehouse holds `home_lock` while it works.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from llmrec_platform.paths import Paths
from llmrec_platform.settings import Settings, SettingsError

DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
PROTOCOL_CHOICES = ("recbole", "temporal")
TASK_CHOICES = ("ranking", "rating")  # rating: Surprise's k-fold RMSE protocol (job rating_pipeline)
REPORTED_STEPS = ("evaluation_report", "encoder_comparison", "rating_report")  # outputs a run's summary prints
STOP_GRACE_S = 15.0


class CliError(Exception):
    pass


# --- option parsing: every value is checked before any work starts --------------------------------------

class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def device_option(value: str) -> str:
    if not DEVICE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"invalid device {value!r}: use auto, cpu, cuda or cuda:N")
    return value


def cold_items_option(value: str) -> float:
    try:
        fraction = float(value)
    except ValueError:
        fraction = float("nan")
    if not 0.0 <= fraction <= 0.5:  # also rejects nan
        raise argparse.ArgumentTypeError(f"invalid fraction {value!r}: a number between 0 and 0.5")
    return fraction


def seed_option(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"invalid seed {value!r}: a whole number >= 0")
    return int(value)


def port_option(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value!r}: a whole number from 1 to 65535")
    return int(value)


def workers_option(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise argparse.ArgumentTypeError(f"invalid worker count {value!r}: a whole number from 1 to 64")
    return int(value)


def dataset_option(value: str) -> str:
    """A packaged dataset name, a GroupLens folder or a dataset config that exists (not yet parsed)."""
    from llmrec_platform.data.datasets import DatasetError, resolve_source

    try:
        resolve_source(value)
    except DatasetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port} ({exc.strerror}): pick another --port or --host") from None


# --- one run per home at a time ---------------------------------------------------------------------------

@dataclass
class HomeLock:
    path: Path
    previous_holder: str  # what a holder that did not exit cleanly left in the file ("" when none)


@contextlib.contextmanager
def home_lock(paths: Paths, command: str) -> Iterator[HomeLock]:
    """Hold `<home>/llmrec.lock` (flock, so the kernel releases it when the holder dies, even by kill -9).
    A second holder gets a CliError naming the first one's pid."""
    paths.home.mkdir(parents=True, exist_ok=True)
    lock_path = paths.lock
    handle = open(lock_path, "a+")  # noqa: SIM115 - held open for the duration of the block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise CliError(f"{paths.home} is in use by {holder}: wait for it to finish, or point LLMREC_HOME "
                           "at another folder") from None
        handle.seek(0)
        previous = handle.read().strip()  # non-empty: its holder was killed before it could clear it
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} (llmrec {command}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC)\n")
        handle.flush()
        try:
            yield HomeLock(lock_path, previous)
        finally:
            handle.seek(0)
            handle.truncate()
    finally:
        handle.close()  # releases the flock


# --- child processes that stop with us ----------------------------------------------------------------------

def stop_group(pgid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every process of the group, then SIGKILL what is left after `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def run_child(command: list[str], env: dict[str, str] | None = None, grace_s: float = STOP_GRACE_S) -> int:
    """Run a long-lived child (a UI, a server) in its own process group until it exits or we get SIGINT /
    SIGTERM; either way no process of its group outlives this call."""
    stopping: list[int] = []
    children: list[subprocess.Popen] = []

    def forward(signum, _frame):
        if not stopping:
            stopping.append(signum)
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)  # it stops its own children; stop_group is the backstop

    # Handlers first: a signal the parent ignores (SIG_IGN) is inherited through exec, a handled one is reset to
    # the default, so the child always stops on SIGTERM whatever our own parent left us.
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    child = subprocess.Popen(command, env=env, start_new_session=True)
    children.append(child)
    if stopping:  # a signal arrived while the child was starting
        os.kill(child.pid, signal.SIGTERM)
    try:
        code = child.wait()  # PEP 475: resumes after `forward` runs, until the child has exited
    finally:
        stop_group(child.pid, grace_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping else code


# --- quiet by default ----------------------------------------------------------------------------------

def configure_libraries(verbose: bool) -> None:
    """Library progress bars and notices only with --verbose, through each library's own switch.

    sentence-transformers and our evaluation draw bars when their logger is at INFO; transformers and
    huggingface_hub follow huggingface_hub's switch; MLflow configures its logger when imported, so it
    is imported first and then set."""
    import huggingface_hub.utils
    import mlflow  # noqa: F401 - its import sets the level we override below

    if verbose:
        huggingface_hub.utils.enable_progress_bars()
    else:
        huggingface_hub.utils.disable_progress_bars()
    if "transformers" in sys.modules:  # it reads huggingface_hub's switch only when imported
        import transformers.utils.logging as transformers_logging

        (transformers_logging.enable_progress_bar if verbose else transformers_logging.disable_progress_bar)()
    level = logging.INFO if verbose else logging.WARNING
    for name in ("sentence_transformers", "llmrec_platform", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(level)


# --- the pipeline ----------------------------------------------------------------------------------------

def dataset_months(dataset: str, memory_limit: str) -> tuple[str, str]:
    """First and last monthly partition keys that hold the dataset's ratings. The dataset loads under the run's
    DuckDB memory limit (LLMREC_DUCKDB_MEMORY_LIMIT), set here for the process before the first load."""
    import pyarrow.compute as pc

    from llmrec_platform.assets.partitions import monthly_partitions
    from llmrec_platform.data.datasets import load_dataset_cached
    from llmrec_platform.data.duck import set_memory_limit

    set_memory_limit(memory_limit)
    bounds = pc.min_max(load_dataset_cached(dataset).ratings_table["timestamp"])  # Arrow: no pandas copy
    keys = monthly_partitions.get_partition_keys()
    first, last = (pd.Timestamp(int(bounds[end].as_py()), unit="s").strftime("%Y-%m-01") for end in ("min", "max"))
    if first < keys[0] or last > keys[-1]:
        raise CliError(f"ratings of {dataset} span {first} .. {last}, outside the partitions {keys[0]} .. {keys[-1]}")
    return first, last


def dagster_env(paths: Paths) -> dict[str, str]:
    """The environment of a child process that opens the platform's Dagster instance (<home>/dagster)."""
    return {**os.environ, "DAGSTER_HOME": str(paths.dagster_home)}


class PipelineResult:
    """The runs of one `run_pipeline` call (full_pipeline, then finetune_encoder when asked), read as one."""

    def __init__(self, results: list):
        self.results = results

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    @property
    def run_id(self) -> str:
        return self.results[0].run_id

    @property
    def all_events(self) -> list:
        return [e for r in self.results for e in r.all_events]

    def _holding(self, node: str):
        for result in self.results:
            if node in {n.name for n in result.job_def.nodes}:
                return result
        raise KeyError(f"no run of this pipeline has the node {node!r}")

    def output_for_node(self, node: str, output_name: str = "result"):
        return self._holding(node).output_for_node(node, output_name)

    def asset_materializations_for_node(self, node: str):
        return self._holding(node).asset_materializations_for_node(node)


def run_pipeline(dataset: str, protocol: str, cold_items: float = 0.0, device: str = "auto", seed: int = 2020,
                 finetune: bool = False, log_level: str = "WARNING", settings: Settings | None = None,
                 console=None, fast: bool = False, task: str = "ranking",
                 launched_by: str = "llmrec demo") -> tuple[Paths, PipelineResult]:
    """Run the named job `full_pipeline` (all ratings partitions in one run), then `finetune_encoder` when
    asked, on the persistent Dagster instance of the settings' home (default: read from the environment).
    `fast` runs `fast_pipeline` instead (no hybrid ablation, a one-model hybrid); `task="rating"` runs `rating_pipeline` alone.
    `console` (an orchestration.console.RunConsole) receives the runs' step events; `launched_by` tags the runs."""
    settings = settings or Settings.from_env()
    first, last = dataset_months(dataset, settings.duckdb_memory_limit)  # fail fast in one line, before Dagster
    paths = settings.paths.ensure()
    finish_erasures(paths)  # an interrupted `llmrec forget` first: the run must not read what it was removing
    import dagster as dg

    from llmrec_platform.definitions import (
        FAST_RUN_CONFIG,
        build_definitions,
        build_resources,
        fast_pipeline_job,
        finetune_encoder_job,
        full_pipeline_job,
        rating_pipeline_job,
    )
    from llmrec_platform.orchestration.in_process import execute_keeping

    defs = build_definitions(resources=build_resources(paths, dataset=dataset, protocol=protocol,
                                                       cold_items=cold_items, device=device, seed=seed,
                                                       settings=settings), settings=settings)
    # With our console, Dagster's own console logger speaks only with --verbose: its errors carry stack traces,
    # and the failure's message is raised below in one line.
    quiet = console is not None and log_level == "WARNING"
    loggers = {} if quiet else {"console": dg.colored_console_logger}
    logger_config = {} if quiet else {"console": {"config": {"log_level": log_level}}}
    if console is not None:
        from llmrec_platform.orchestration.console import console_logger

        loggers["llmrec_console"] = console_logger(console)
        logger_config["llmrec_console"] = {}
    instance = dg.DagsterInstance.from_config(str(paths.dagster_home))
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last,
            "llmrec/dataset": dataset, "llmrec/protocol": protocol, "llmrec/cold_items": str(cold_items),
            "llmrec/launched_by": launched_by}
    results = []
    jobs = [fast_pipeline_job if fast else full_pipeline_job] + ([finetune_encoder_job] if finetune else [])
    for job in [rating_pipeline_job] if task == "rating" else jobs:
        run_config = {**(FAST_RUN_CONFIG if job is fast_pipeline_job else {}), "loggers": logger_config}
        result = execute_keeping(defs.resolve_job_def(job.name).with_logger_defs(loggers), REPORTED_STEPS, instance,
                                 run_config=run_config, tags=tags, raise_on_error=False)
        results.append(result)
        if not result.success:
            raise CliError(f"run {result.run_id} of {job.name} failed: {failure_message(result)}")
    return paths, PipelineResult(results)


def failure_message(result) -> str:
    """The failed step and its error in one line (the stack trace is in the Dagster UI and in --verbose)."""
    for event in reversed(result.all_events):
        if event.is_step_failure:
            error = event.step_failure_data.error
            cause = error.cause if error is not None and error.cause is not None else error  # a user error's own
            detail = cause.message.strip() if cause is not None else event.message  # "ValueError: ..."
            return f"step {event.step_key}: {detail} (the stack trace: llmrec ui, or --verbose)"
    failures = [e.message for e in result.all_events if e.is_failure]
    if any("interrupted" in (m or "") for m in failures):
        return "interrupted (SIGINT/SIGTERM); Dagster marked the run failed"
    return failures[-1] if failures else "see the Dagster logs"


def champion_line(report: dict) -> str:
    """Who the champion is and why: the selection rule, its validation score, the runner-up, its test score."""
    from llmrec_platform.evaluation.suite import CHAMPION_METRIC

    champion, valid = report["champion"], report["valid_scores"]
    metrics = report["metrics"]
    test = metrics[(metrics["fold"] == "test") & (metrics["ranker"] == champion) & (metrics["metric"] == "ndcg")
                   & (metrics["k"] == 10)]
    slice_name = "all" if "all" in set(test["slice"]) else "warm"
    test_score = float(test.loc[test["slice"] == slice_name, "value"].iloc[0])
    others = sorted(((v, r) for r, v in valid.items() if r != champion), reverse=True)
    runner_up = f" (runner-up {others[0][1]}, {others[0][0]:.4f})" if others else ""
    metric = CHAMPION_METRIC.replace("ndcg", "NDCG").replace("_at_", "@")
    on = "" if slice_name == "all" else f" ({slice_name} items)"
    return (f"Champion: {champion} — best validation {metric}, {valid[champion]:.4f}{runner_up}; "
            f"on test{on} it scores {test_score:.4f}")


def cmd_pipeline(args: argparse.Namespace, settings: Settings) -> int:
    """`llmrec demo` and `llmrec run`: the same graph and summary; `args.command` names the verb."""
    from llmrec_platform.data.quarantine import load_summary
    from llmrec_platform.evaluation.report import format_table, metrics_table
    from llmrec_platform.orchestration.console import RunConsole
    from llmrec_platform.serving.bundle import current_bundle
    from llmrec_platform.storage.warehouse import Warehouse

    start = time.perf_counter()
    paths = settings.paths
    if args.task == "rating" and (args.finetune or args.fast or args.cold_items):
        raise CliError("--finetune, --fast and --cold-items belong to --task ranking")
    verb = f"llmrec {args.command}"
    with home_lock(paths, args.command) as lock:
        if lock.previous_holder:
            print(f"note: took over the lock of a run that did not finish ({lock.previous_holder})", file=sys.stderr)
        what = "rating task (k-fold RMSE)" if args.task == "rating" else f"{args.protocol} protocol"
        print(f"{verb}: {args.dataset}, {what}, device {args.device}, home {paths.home}", flush=True)
        configure_libraries(args.verbose)
        console = RunConsole()
        # SIGTERM stops the run like Ctrl-C: Dagster marks it failed, and the lock is released on the way out.
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            paths, result = run_pipeline(args.dataset, args.protocol, args.cold_items, args.device, args.seed,
                                         finetune=args.finetune, log_level="DEBUG" if args.verbose else "WARNING",
                                         fast=args.fast, task=args.task, launched_by=verb,
                                         settings=settings, console=console)
        finally:
            signal.signal(signal.SIGTERM, previous)
    print(console.summary())
    if args.task == "rating":
        return print_rating(result, args, paths, start)
    report = result.output_for_node("evaluation_report")
    metrics = report["metrics"]
    for slice_name in sorted(metrics["slice"].unique()):
        print(f"\nTest fold, {slice_name} items ({args.dataset}, {args.protocol} protocol):\n")
        print(format_table(metrics_table(metrics, "test", slice_name)))
    if args.finetune:
        comparison = result.output_for_node("encoder_comparison")
        for slice_name in sorted(comparison["metrics"]["slice"].unique()):
            print(f"\nFrozen vs fine-tuned encoder, test fold, {slice_name} items:\n")
            print(format_table(metrics_table(comparison["metrics"], "test", slice_name)))
        if comparison["comparisons"]:
            print("\n" + "\n".join(paired_line(c) for c in comparison["comparisons"]))
    print(f"\n{champion_line(report)}")
    print(f"Report:    {report['report_path']}")
    print(f"Warehouse: {paths.warehouse}")
    print(f"MLflow:    {paths.mlflow_uri}  (llmrec mlflow-ui)")
    jobs = ", ".join(f"{r.job_def.name} {r.run_id}" for r in result.results)
    print(f"Dagster:   run {jobs} in {paths.dagster_home}  (llmrec ui)")
    if (paths.bundles / "current").exists():
        print(f"Serving:   bundle {current_bundle(paths.bundles).name} in {paths.bundles}  (llmrec serve)")
    print(load_summary(Warehouse(paths.warehouse), args.dataset))
    print(f"Done in {time.perf_counter() - start:.1f} s")
    return 0


def paired_line(c: dict) -> str:
    """One paired comparison (`PairedComparison.as_dict()` plus its slice) as a line of the demo's output."""
    return (f"Paired, test fold, {c['slice']} items ({c['users']} users): {c['ranker']} - {c['baseline']} "
            f"{c['metric']} {c['mean_difference']:+.4f} [95% CI {c['ci_low']:+.4f}, {c['ci_high']:+.4f}], "
            f"Wilcoxon p {c['wilcoxon_p']:.2g}")


def print_rating(result: PipelineResult, args: argparse.Namespace, paths: Paths, start: float) -> int:
    """The mean table of `llmrec demo|run --task rating` (per-fold rows are in the warehouse's rating_metrics)."""
    report = result.output_for_node("rating_report")
    summary = report["summary"]
    print(f"\nRating prediction, {args.dataset}, {int(report['metrics']['fold'].nunique())} random folds "
          f"(seed {args.seed}), mean over folds:\n")
    print("| model | RMSE | MAE |\n|---|---:|---:|")
    for model, row in summary.iterrows():
        print(f"| {model} | {row.rmse_mean:.4f} ± {row.rmse_std:.4f} | {row.mae_mean:.4f} ± {row.mae_std:.4f} |")
    if report["ablation"]:
        a = report["ablation"]
        print(f"\nLLM features: RMSE {a['rmse_with']:.4f} with, {a['rmse_without']:.4f} without ({a['diff']:+.4f})")
    print(f"\nBest: {report['best_model']}")
    print(f"Report:    {report['report_path']}")
    print(f"Warehouse: {paths.warehouse}  (table rating_metrics, run {result.run_id})")
    print(f"MLflow:    {paths.mlflow_uri}  (llmrec mlflow-ui)")
    print(f"Done in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    check_port_free(args.host, args.port)
    paths = settings.paths.ensure()
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", args.host, "-p", str(args.port)]
    return run_child(command, env=dagster_env(paths))


def cmd_mlflow_ui(args: argparse.Namespace, settings: Settings) -> int:
    check_port_free(args.host, args.port)
    paths = settings.paths.ensure()
    # The experiments are tagged as model training; this link opens that view instead of GenAI's.
    print(f"MLflow UI: http://{args.host}:{args.port}/#/experiments?workflowType=machine_learning", flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", paths.mlflow_uri,
               "--host", args.host, "--port", str(args.port)]
    return run_child(command)


def add_pipeline_options(verb: argparse.ArgumentParser) -> None:
    """The options `demo` and `run` share: how the graph runs, not what it reads."""
    verb.add_argument("--task", default="ranking", choices=TASK_CHOICES,
                      help="ranking (default) or rating: 5-fold RMSE / MAE over all ratings (job rating_pipeline)")
    verb.add_argument("--protocol", default="recbole", choices=PROTOCOL_CHOICES)
    verb.add_argument("--cold-items", type=cold_items_option, default=0.0,
                      help="fraction of items held out of training (0-0.5)")
    verb.add_argument("--device", default="auto", type=device_option, help="auto | cpu | cuda | cuda:N")
    verb.add_argument("--seed", type=seed_option, default=2020)
    verb.add_argument("--finetune", action="store_true",
                      help="then fine-tune the encoder (job finetune_encoder; minutes on a CPU) and compare")
    verb.add_argument("--fast", action="store_true",
                      help="job fast_pipeline: no hybrid ablation, a one-model hybrid without pseudo-labels "
                           "(its NDCG cost is in the README)")
    verb.add_argument("--verbose", action="store_true",
                      help="Dagster's step-by-step log, library progress bars and notices")
    verb.set_defaults(func=cmd_pipeline)


def add_demo(commands) -> None:
    what = "the demo on the bundled MovieLens-100K: runs the whole graph (job full_pipeline), prints the metrics table"
    demo = commands.add_parser("demo", help=what, description=what)
    demo.add_argument("--dataset", default="ml-100k", type=dataset_option,
                      help="a bundled MovieLens set: ml-100k (default) or ml-1m")
    add_pipeline_options(demo)


def add_run(commands) -> None:
    what = "run the whole graph (job full_pipeline) on your data and print the metrics table"
    run = commands.add_parser("run", help=what, description=what)
    run.add_argument("--dataset", "--config", dest="dataset", required=True, type=dataset_option, metavar="PATH",
                     help="your dataset config (.yaml: files and columns, see the docs) or a folder in GroupLens layout")
    add_pipeline_options(run)


def add_uis(commands) -> None:
    for name, port, func, what in (("ui", 3000, cmd_ui, "Dagster"), ("mlflow-ui", 5000, cmd_mlflow_ui, "MLflow")):
        sub = commands.add_parser(name, help=f"start the {what} UI (stops with its processes on Ctrl-C / SIGTERM)")
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=port_option, default=port)
        sub.set_defaults(func=func)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from llmrec_platform.serving.bundle import BundleError
    from llmrec_platform.serving.server import serve

    check_port_free(args.host, args.port)
    finish_erasures(settings.paths, lock=True)
    try:
        serve(settings, args.host, args.port, args.workers, "info" if args.verbose else "warning", args.server)
    except BundleError as exc:
        raise CliError(str(exc)) from None
    return 0


def add_serve(commands) -> None:
    serve = commands.add_parser("serve", help="serve the published bundle over HTTP (stops cleanly on Ctrl-C / SIGTERM)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback only)")
    serve.add_argument("--port", type=port_option, default=8000)
    serve.add_argument("--workers", type=workers_option, default=1, metavar="N",
                       help="worker processes sharing the event log (1-64)")
    serve.add_argument("--server", choices=("granian", "uvicorn"), default="granian",
                       help="the HTTP server (default granian: docs/serving.md compares them)")
    serve.add_argument("--verbose", action="store_true", help="uvicorn's info log")
    serve.set_defaults(func=cmd_serve)


# --- erasure ---------------------------------------------------------------------------------------------------

def user_id_option(value: str) -> str:
    if not value.strip() or len(value) > 200:
        raise argparse.ArgumentTypeError(f"invalid user id {value[:40]!r}: 1 to 200 characters, not blank")
    return value


def finish_erasures(paths: Paths, lock: bool = False) -> None:
    """Finish the erasures an interrupted `llmrec forget` left pending (before a pipeline run or a server starts)."""
    from llmrec_platform.erasure import finish_pending
    from llmrec_platform.erasure.ledger import read_journal

    if not read_journal(paths.erasure):
        return
    with home_lock(paths, "forget (resumed)") if lock else contextlib.nullcontext():
        for report in finish_pending(paths):
            print(f"llmrec: finished an interrupted erasure (tombstone {report.tombstone[:12]})", file=sys.stderr)


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    from llmrec_platform.data.config import config_pseudonymize
    from llmrec_platform.data.privacy import PrivacyError, pseudonymizer_for
    from llmrec_platform.erasure import forget

    paths = settings.paths
    try:  # the stores hold pseudonyms when pseudonymization is on: map the ids as the server does
        pseudonymizer = pseudonymizer_for(settings.pseudonymize or config_pseudonymize(settings.dataset),
                                          settings.pseudonym_key, f"privacy.pseudonymize in {settings.dataset}")
    except PrivacyError as exc:
        raise CliError(str(exc)) from None
    with home_lock(paths, "forget"):
        by_id, resumed = forget(paths, args.user_ids, pseudonymizer)
    for report in resumed:
        print(f"llmrec forget: finished an interrupted erasure (tombstone {report.tombstone[:12]})")
    for user_id, report in by_id.items():
        if not report.held:
            when = f"already erased at {report.erased_before}; " if report.erased_before else ""
            print(f"llmrec forget: {user_id}: nothing held for this id ({when}tombstone {report.tombstone[:12]})")
            continue
        removed = ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in report.stores.items() if count)
        print(f"llmrec forget: {user_id}: erased ({removed}); tombstone {report.tombstone[:12]} in {paths.erasure}")
        if report.refit:
            print(f"  refit needed to forget fully: {', '.join(report.refit)} (their fit cache entries are deleted; the "
                  "next nightly_retrain refits them, or run `llmrec demo` now)")
    left = sorted({path for report in [*by_id.values(), *resumed] for path in report.leftovers})
    if left:
        print(f"llmrec forget: still found in {', '.join(left)}: remove these by hand", file=sys.stderr)
        return 1
    return 0


def add_forget(commands) -> None:
    forget = commands.add_parser("forget", help="erase users everywhere: warehouse, logs, bundles, rankers, caches, "
                                                "reports, MLflow, Dagster (idempotent; resumes after a crash)")
    forget.add_argument("user_ids", nargs="+", type=user_id_option, metavar="USER_ID",
                        help="the id clients use (mapped to its pseudonym when pseudonymization is on)")
    forget.set_defaults(func=cmd_forget)


# --- catalogue -------------------------------------------------------------------------------------------------

def cmd_add_items(args: argparse.Namespace, settings: Settings) -> int:
    from llmrec_platform.live.catalogue import LANDING_ITEMS, add_landed_items
    from llmrec_platform.serving.bundle import BundleError

    paths = settings.paths
    try:
        with home_lock(paths, "add-items"):
            results = add_landed_items(paths)
    except BundleError as exc:
        raise CliError(str(exc)) from None
    if not results:
        print(f"llmrec add-items: no item files in {paths.landing / LANDING_ITEMS}")
    for r in results:
        if r.status == "rejected":
            print(f"llmrec add-items: {r.file}: rejected ({r.reason}); moved to {r.destination}", file=sys.stderr)
        else:
            print(f"llmrec add-items: {r.file}: {r.added} of {r.rows} items added, {r.quarantined} rows quarantined "
                  f"(the warehouse's quarantine table, source_file {str(r.file)!r}); moved to {r.destination}")
    return 1 if any(r.status == "rejected" for r in results) else 0


def add_add_items(commands) -> None:
    what = ("add the item files waiting in LLMREC_HOME/landing/items/ (item_id, title, text[, categories]) to the "
            "live catalogue: encoded, appended to the items log, served at once by every running server")
    verb = commands.add_parser("add-items", help=what, description=what)
    verb.set_defaults(func=cmd_add_items)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="llmrec", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_demo(commands)
    add_run(commands)
    add_uis(commands)
    add_serve(commands)
    add_forget(commands)
    add_add_items(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from llmrec_platform.data.datasets import DatasetError
    from llmrec_platform.encoders.models import EncoderError

    try:
        code = args.func(args, Settings.from_env())
        # What a run leaves (the reports it printed, Dagster's event records) lives until exit: frozen, it is left
        # out of the interpreter's last garbage collection (the demo's wrap-up).
        gc.freeze()
        return code
    except (DatasetError, EncoderError, CliError, SettingsError) as exc:
        print(f"llmrec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llmrec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
