"""Progress reports: the listener plumbing, what long work reports, and the CLI's progress bar."""

import io

import dagster as dg
import numpy as np
import pytest

from llmrec_platform import progress
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.orchestration.console import RunConsole, console_logger
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker
from llmrec_platform.rankers.multvae import MultVAERanker
from llmrec_platform.rankers.simple import PopularityRanker
from llmrec_platform.testing import two_group_split
from tests.test_hybrid import content_ranker


def collect():
    reports = []
    return reports, lambda done, total, unit: reports.append((done, total, unit))


def test_reports_reach_the_listener_of_the_block_only():
    progress.report(1, 2, "texts")  # nobody listens: nothing happens
    outer, inner = collect(), collect()
    with progress.listening(outer[1]):
        progress.report(1, 3, "epochs")
        with progress.listening(inner[1]):
            progress.report(2, 3, "epochs")
        progress.report(3, 3, "epochs")
    progress.report(9, 9, "epochs")
    assert outer[0] == [(1, 3, "epochs"), (3, 3, "epochs")] and inner[0] == [(2, 3, "epochs")]


def test_messages_round_trip_and_throttling_keeps_the_last(monkeypatch):
    assert progress.parse(progress.message(640, 1682, "texts")) == (640, 1682, "texts")
    assert progress.parse("progress report: done") is None and progress.parse("progress 3/4") is None
    clock = iter([0.0, 0.2, 0.4, 1.5, 1.6])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    lines = []
    listener = progress.throttled(lines.append, every_s=1.0)
    for done in (1, 2, 3, 4, 5):
        listener(done, 5, "trees")
    # 0.0 passes; 0.2 and 0.4 are within a second; 1.5 passes; 1.6 is within a second but the last report
    assert lines == ["progress 1/5 trees", "progress 4/5 trees", "progress 5/5 trees"]


def test_the_encoder_reports_every_text():
    from llmrec_platform.encoders.models import TextEncoder

    texts = [f"a film about {word}" for word in ("space", "love", "war", "cooking", "trains")]
    reports, listener = collect()
    encoder = TextEncoder(batch_size=2)
    with progress.listening(listener):
        vectors, _ = encoder.encode(texts)
    assert [done for done, _, _ in reports] == [2, 4, 5] and {(t, u) for _, t, u in reports} == {(5, "texts")}
    np.testing.assert_array_equal(vectors, encoder.encode(texts)[0])  # counting batches changes no vector


def test_multvae_reports_epochs():
    data = InteractionData.from_split(two_group_split())
    reports, listener = collect()
    with progress.listening(listener):
        MultVAERanker(hidden=8, latent=2, epochs=3, batch_size=8, seed=1).fit(data)
    assert reports == [(1, 3, "epochs"), (2, 3, "epochs"), (3, 3, "epochs")]


def test_the_hybrid_reports_refits_then_trees():
    data = InteractionData.from_split(two_group_split())
    candidates = {"ease": EASERanker(reg_weight=10).fit(data), "popularity": PopularityRanker().fit(data)}
    config = HybridConfig(n_candidates=8, n_estimators=6, min_child_samples=5, num_leaves=7, seed=3, num_threads=1,
                          pseudo_label_share=0.2, n_models=2)
    reports, listener = collect()
    with progress.listening(listener):
        HybridRanker(candidates, content_ranker(data), config=config).fit(data)
    refits = [r for r in reports if r[2] == "base rankers refitted"]
    trees = [r for r in reports if r[2] == "trees"]
    # two candidate rankers and the hybrid's own sequence feature ranker are refitted for the pseudo-labels
    assert refits == [(1, 3, "base rankers refitted"), (2, 3, "base rankers refitted"), (3, 3, "base rankers refitted")]
    assert [done for done, _, _ in trees] == list(range(1, 13)) and {total for _, total, _ in trees} == {12}
    assert reports.index(refits[-1]) < reports.index(trees[0])


def test_the_console_draws_the_running_steps_progress():
    stream = io.StringIO()
    console = RunConsole(stream=stream, live=False)
    seen = {}

    @dg.op
    def encodes(context) -> None:
        context.log.debug(progress.message(640, 1682, "texts"))
        seen["line"] = console.status_line("encodes", 12.0)

    @dg.job
    def job():
        encodes()

    result = job.with_logger_defs({"llmrec_console": console_logger(console)}).execute_in_process(
        run_config={"loggers": {"llmrec_console": {}}})
    assert result.success
    line = seen["line"]
    assert line.startswith("  encodes") and "12 s" in line and line.endswith("] 640/1,682 texts")
    assert line.count("#") == round(640 / 1682 * 24)
    assert console.status_line("encodes", 13.0).endswith("13 s ...")  # a finished step's progress is dropped
    assert "progress" not in stream.getvalue()  # reports draw the bar; they are never printed as lines


@pytest.mark.parametrize("total", [0, 3])
def test_a_bar_never_overflows(total):
    console = RunConsole(stream=io.StringIO(), live=False)
    console._progress["step"] = (5, total, "epochs")
    bar = console.status_line("step", 1.0).split("[")[1].split("]")[0]
    assert len(bar) == 24 and bar == ("#" * 24 if total else "." * 24)
