"""The `llmrec` command: clear one-line errors for bad input, no traceback."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def run_cli(*args, env_home, **env):
    return subprocess.run([sys.executable, "-m", "llmrec_platform.cli", *args], capture_output=True, text=True,
                          env={"LLMREC_HOME": str(env_home), "PATH": "/usr/bin:/bin", **env}, timeout=120)


@pytest.mark.parametrize("dataset, message", [
    ("/definitely/not/here", "is neither a packaged dataset"),
    ("ml-20m", "is neither a packaged dataset"),
])
def test_bad_dataset_is_one_clear_line(tmp_path, dataset, message):
    result = run_cli("demo", "--dataset", dataset, env_home=tmp_path / "home")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_malformed_folder_is_one_clear_line(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "u.data").write_text("1\t2\t3\t4\n")
    result = run_cli("demo", "--dataset", str(folder), env_home=tmp_path / "home")
    assert result.returncode == 2
    assert "missing file" in result.stderr and "u.item" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_out_of_range_cold_items_is_rejected(tmp_path):
    result = run_cli("demo", "--cold-items", "0.9", env_home=tmp_path / "home")
    assert result.returncode == 2 and "--cold-items" in result.stderr


def test_a_bad_setting_is_one_clear_line(tmp_path):
    result = run_cli("demo", env_home=tmp_path / "home", LLMREC_TIMEZONE="Mars/Olympus")
    assert result.returncode == 2
    assert "LLMREC_TIMEZONE='Mars/Olympus' is not an IANA time zone" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- every option is checked before any work: one line naming the valid choices ---------------------------

@pytest.mark.parametrize("args, message", [
    (["demo", "--device", "tpu"], "invalid device 'tpu': use auto, cpu, cuda or cuda:N"),
    (["demo", "--protocol", "weekly"], "invalid choice: 'weekly'"),
    (["demo", "--cold-items", "lots"], "invalid fraction 'lots': a number between 0 and 0.5"),
    (["demo", "--seed", "-1"], "invalid seed '-1': a whole number >= 0"),
    (["demo", "--dataset", "ml-20m"], "is neither a packaged dataset (ml-100k, ml-1m"),
    (["demo", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["ui", "--port", "99999"], "invalid port '99999': a whole number from 1 to 65535"),
    (["mlflow-ui", "--port", "http"], "invalid port 'http'"),
    (["deploy"], "invalid choice: 'deploy'"),
    (["run"], "the following arguments are required: --dataset/--config"),
    (["run", "--config", "/definitely/not/here.yaml"], "dataset config /definitely/not/here.yaml does not exist"),
    (["run", "--dataset", "ml-100k", "--device", "tpu"], "invalid device 'tpu'"),
])
def test_invalid_option_is_one_line_with_the_choices(tmp_path, args, message):
    result = run_cli(*args, env_home=tmp_path / "home")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # exactly one line, no usage block
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "home").exists()  # refused before anything was created


def test_protocol_error_lists_the_protocols(tmp_path):
    result = run_cli("demo", "--protocol", "weekly", env_home=tmp_path / "home")
    assert "recbole" in result.stderr and "temporal" in result.stderr


# --- one run per home -------------------------------------------------------------------------------------

def test_second_run_on_a_home_refuses_and_names_the_holder(tmp_path, tiny_dataset_dir):
    from llmrec_platform.cli import home_lock
    from llmrec_platform.paths import Paths

    home = tmp_path / "home"
    with home_lock(Paths(home), "demo"):
        result = run_cli("demo", "--dataset", str(tiny_dataset_dir), env_home=home)
    assert result.returncode == 2
    assert f"is in use by pid {os.getpid()} (llmrec demo" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (home / "warehouse.duckdb").exists()
    assert Paths(home).lock.read_text() == ""  # released cleanly: nothing names a holder any more


def test_lock_left_by_kill_9_is_taken_over(tmp_path):
    from llmrec_platform.cli import CliError, home_lock
    from llmrec_platform.paths import Paths

    paths = Paths(tmp_path / "home")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from pathlib import Path\nfrom llmrec_platform.cli import home_lock\nfrom llmrec_platform.paths import Paths\n"
        f"with home_lock(Paths(Path({str(paths.home)!r})), 'demo'):\n"
        "    print('locked', flush=True)\n    time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CliError, match=f"in use by pid {holder.pid} "), home_lock(paths, "demo"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert f"pid {holder.pid} " in paths.lock.read_text()  # the dead holder could not clear the file
    with home_lock(paths, "demo") as lock:
        assert f"pid {holder.pid} " in lock.previous_holder
        assert paths.lock.read_text().startswith(f"pid {os.getpid()} ")


# --- long-running commands stop with their children -------------------------------------------------------

def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(FileNotFoundError):
                children = {int(c) for c in (task / "children").read_text().split()}
                todo += list(children - found)
                found |= children
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_run_child_stops_the_whole_group_on_sigterm(tmp_path):
    # The child leaves a grandchild behind when it dies, as a server's workers would.
    script = ("import subprocess, sys, time\n"
              "from llmrec_platform.cli import run_child\n"
              "child = ('import subprocess, time; subprocess.Popen([\"sleep\", \"600\"]); print(\"up\", flush=True); "
              "time.sleep(600)')\n"
              "sys.exit(run_child([sys.executable, '-c', child], grace_s=2))\n")
    # Started with SIGTERM ignored, as a parent may leave it: the child must still stop.
    cli = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    assert cli.stdout.readline().strip() == "up"
    family = descendants(cli.pid)
    assert len(family) == 2  # the child and its sleeping grandchild
    cli.send_signal(signal.SIGTERM)
    assert cli.wait(timeout=30) == 0
    assert not [pid for pid in family if alive(pid)]


def test_ui_stops_cleanly_with_its_processes_on_sigterm(tmp_path):
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "llmrec_platform.cli", "ui", "--port", str(port)],
                          env={**os.environ, "LLMREC_HOME": str(tmp_path / "home")},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300  # dagster dev loads the code location first (slow on a busy machine)
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert ui.poll() is None, "llmrec ui exited before serving"
            time.sleep(1)
        else:
            pytest.fail("the Dagster UI did not start listening")
        family = descendants(ui.pid)
        assert family  # dagster dev and its webserver, daemon and code server
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=90) == 0
        assert not [pid for pid in family if alive(pid)]
    finally:
        if ui.poll() is None:
            ui.kill()


# --- a default run: quiet, one line per asset, the champion's rule, a named and tagged run --------------

def test_default_demo_prints_no_progress_bars_and_names_its_run(llmrec_home, tiny_dataset_dir, capfd):
    import dagster as dg

    from llmrec_platform.cli import main

    assert main(["demo", "--dataset", str(tiny_dataset_dir), "--device", "cpu"]) == 0
    out, err = capfd.readouterr()
    both = out + err
    for noise in ("it/s]", "s/it]", "Batches", "Loading weights", "%|", "INFO mlflow", "alembic", "DEBUG"):
        assert noise not in both, f"{noise!r} in the default output"
    lines = out.splitlines()
    for asset in ("raw_ratings", "item_embeddings", "ease_ranker", "hybrid_ranker", "evaluation_report"):
        assert any(re.fullmatch(rf"  {asset} +\d+\.\d s +peak RSS +\d+\.\d\d GiB \(\+\d+\.\d\d\)  RSS after +\d+\.\d\d GiB",
                                    line)
                       for line in lines), asset
    assert re.search(r"^Champion: \w+ — best validation NDCG@10, 0\.\d{4} \(runner-up \w+, 0\.\d{4}\); "
                     r"on test it scores 0\.\d{4}$", out, re.MULTILINE)
    instance = dg.DagsterInstance.from_config(str(llmrec_home.dagster_home))
    [run] = instance.get_runs()
    assert run.job_name == "full_pipeline"
    assert run.tags["llmrec/dataset"] == str(tiny_dataset_dir) and run.tags["llmrec/protocol"] == "recbole"
    assert run.run_id in out


def test_uis_are_configured_to_open_plainly(tmp_path):
    """No community modal or telemetry in the Dagster UI; MLflow opens the experiment as model training."""
    import dagster as dg

    from llmrec_platform.paths import Paths
    from llmrec_platform.storage.tracking import Tracker

    paths = Paths(tmp_path / "home").ensure()
    instance = dg.DagsterInstance.from_config(str(paths.dagster_home))
    assert instance.nux_enabled is False and instance.telemetry_enabled is False
    tracker = Tracker(paths.mlflow_uri, paths.mlflow_artifacts, "llmrec")
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_home_made_before_the_nux_setting_gets_it(tmp_path):
    from llmrec_platform.paths import Paths

    paths = Paths(tmp_path / "home")
    paths.dagster_home.mkdir(parents=True)
    (paths.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    paths.ensure()
    assert (paths.dagster_home / "dagster.yaml").read_text() == "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


def test_a_failed_run_is_one_line_naming_the_step_and_an_assets_warning_is_shown():
    import io

    import dagster as dg

    from llmrec_platform.cli import failure_message
    from llmrec_platform.orchestration.console import RunConsole, console_logger

    @dg.op
    def warns(context) -> int:
        context.log.warning("dense EASE skipped: 100,000 items")
        return 1

    @dg.op
    def breaks(_value: int) -> None:
        raise ValueError("column 'stars' not found")

    @dg.job
    def broken():
        breaks(warns())

    stream = io.StringIO()
    console = RunConsole(stream=stream, live=False)
    result = broken.with_logger_defs({"llmrec_console": console_logger(console)}).execute_in_process(
        run_config={"loggers": {"llmrec_console": {}}}, raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert message.startswith("step breaks: ValueError: column 'stars' not found") and "\n" not in message
    printed = stream.getvalue()
    assert "warns: warning: dense EASE skipped: 100,000 items" in printed and "breaks" in printed
    assert "Traceback" not in printed


def test_the_finetuned_comparison_prints_one_line_per_pair():
    from llmrec_platform.cli import paired_line
    from llmrec_platform.evaluation.significance import PairedComparison

    c = PairedComparison("hybrid_finetuned", "hybrid", "ndcg@10", 943, 0.3012, 0.2973, 0.0039, -0.0011, 0.0090, 0.031)
    line = paired_line({"slice": "all", **c.as_dict()})
    assert line == ("Paired, test fold, all items (943 users): hybrid_finetuned - hybrid ndcg@10 +0.0039 "
                    "[95% CI -0.0011, +0.0090], Wilcoxon p 0.031")


# --- `llmrec run`: the demo's graph and summary on your own data ----------------------------------------

def test_the_help_keeps_the_demo_and_your_data_apart(tmp_path):
    top = run_cli("--help", env_home=tmp_path / "home").stdout
    demo_line, run_line = (" ".join(re.search(rf"^ {{4}}{verb} +(.*(?:\n {{10,}}.*)*)", top, re.MULTILINE)[1].split())
                           for verb in ("demo", "run"))  # each verb's help, unwrapped
    assert "bundled MovieLens-100K" in demo_line and "your data" not in demo_line
    assert "your data" in run_line and "demo" not in run_line
    demo_help = run_cli("demo", "--help", env_home=tmp_path / "home").stdout
    run_help = run_cli("run", "--help", env_home=tmp_path / "home").stdout
    assert "your" not in demo_help.lower()
    assert "demo" not in run_help.lower() and "--dataset PATH, --config PATH" in run_help
    shared = ("--task", "--protocol", "--cold-items", "--device", "--seed", "--finetune", "--fast", "--verbose")
    assert all(option in demo_help and option in run_help for option in shared)


def write_own_dataset(folder: Path) -> Path:
    """A small shop in its own column names (CSV, string ids, ISO times) and the config that maps it."""
    import numpy as np

    rng = np.random.default_rng(5)
    folder.mkdir(parents=True)
    skus = [f"SKU-{i:03d}" for i in range(24)]
    events = ["customer,sku,stars,when"]
    for customer in range(30):
        liked = skus[:14] if customer % 2 else skus[10:]  # two tastes that overlap on four items
        for day, sku in enumerate(rng.choice(liked, size=12, replace=False), start=1):
            events.append(f"C{customer:03d},{sku},{rng.integers(3, 6)},2024-03-{day:02d}T10:00:00Z")
    (folder / "events.csv").write_text("\n".join(events) + "\n")
    kinds = ["running shoe", "kitchen knife"]
    (folder / "products.csv").write_text("sku,name,kind\n" + "".join(
        f"{sku},Product {i} {kinds[i >= 12]},{kinds[i >= 12]}\n" for i, sku in enumerate(skus)))
    config = folder / "my.yaml"
    config.write_text("interactions: {path: events.csv, user: customer, item: sku, rating: stars, timestamp: when}\n"
                      "items: {path: products.csv, id: sku, text: name, categories: kind}\n")
    return config


@pytest.mark.slow
def test_run_on_a_dataset_config_prints_the_summary_and_tags_its_run(llmrec_home, tmp_path, capfd):
    import dagster as dg
    import duckdb

    from llmrec_platform.cli import main

    config = write_own_dataset(tmp_path / "shop")
    assert main(["run", "--config", str(config), "--fast", "--device", "cpu"]) == 0
    out, _ = capfd.readouterr()
    assert out.startswith(f"llmrec run: {config}, recbole protocol, device cpu, home {llmrec_home.home}\n")
    assert re.search(r"^Champion: \w+ — best validation NDCG@10, 0\.\d{4}", out, re.MULTILINE)
    assert re.search(r"^\| hybrid \|", out, re.MULTILINE)  # the metrics table
    [run] = dg.DagsterInstance.from_config(str(llmrec_home.dagster_home)).get_runs()
    assert run.job_name == "fast_pipeline" and run.run_id in out
    assert run.tags["llmrec/launched_by"] == "llmrec run" and run.tags["llmrec/dataset"] == str(config)
    with duckdb.connect(str(llmrec_home.warehouse), read_only=True) as conn:
        [(users, first_item)] = conn.execute("SELECT count(DISTINCT user_id), min(item_id) FROM recommendations").fetchall()
    assert users == 30 and first_item.startswith("SKU-")  # the shop's own ids, not MovieLens ones


def test_a_finished_command_freezes_what_it_leaves_for_a_quick_exit(tmp_path):
    # The demo's wrap-up: without the freeze, the interpreter's last collection walks every output the run left.
    code = ("import gc\nfrom llmrec_platform import cli\n"
            "assert gc.get_freeze_count() == 0\ncode = cli.main(['add-items'])\nprint(code, gc.get_freeze_count() > 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"LLMREC_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "0 True"
