"""Differential privacy of released aggregates: the noise follows sensitivity / epsilon, epsilon = inf is exact, a
seed makes a release reproducible, bad budgets refuse at start, and the users of it (popularity ranker, online CTR,
the report's counts, DP-SGD Mult-VAE) behave."""

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from llmrec_platform.cli import main
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.report import released_counts
from llmrec_platform.live.online import ONLINE_CELLS, online_ctr, online_markdown, private_online_ctr
from llmrec_platform.privacy.dp import CountRelease, PrivacyError
from llmrec_platform.rankers.multvae import MultVAERanker
from llmrec_platform.rankers.simple import PopularityRanker
from llmrec_platform.serving.bundle import published_popularity
from llmrec_platform.settings import Settings, SettingsError
from llmrec_platform.testing import RankerContract, two_group_split


@pytest.mark.parametrize("epsilon, cells", [(0.5, 1), (1.0, 1), (4.0, 1), (1.0, 4)])
def test_laplace_noise_scale_is_sensitivity_over_epsilon(epsilon, cells):
    # Laplace(b) has variance 2 b^2 with b = L1 sensitivity / epsilon = cells / epsilon.
    release = CountRelease(epsilon, "laplace", seed=11)
    expected_variance = 2 * (cells / epsilon) ** 2
    assert release.noise_std(cells) == pytest.approx(math.sqrt(expected_variance))
    draws = release.release(np.full(20_000, 50.0), cells=cells, stream=f"scale-{epsilon}-{cells}") - 50.0
    assert abs(draws.mean()) < 0.05 * math.sqrt(expected_variance)  # unbiased
    assert draws.var() == pytest.approx(expected_variance, rel=0.06)  # ~5 standard errors of the estimate


def test_gaussian_noise_shrinks_with_epsilon_and_matches_its_variance():
    stds = [CountRelease(e, "gaussian", delta=1e-6).noise_std() for e in (0.5, 1.0, 4.0)]
    assert stds[0] > stds[1] > stds[2] > 0
    # L2 sensitivity sqrt(cells): 4 cells double the deviation.
    assert CountRelease(1.0, "gaussian").noise_std(4) == pytest.approx(2 * stds[1])
    release = CountRelease(1.0, "gaussian", seed=5)
    draws = release.release(np.zeros(20_000), stream="gauss")
    assert draws.var() == pytest.approx(stds[1] ** 2, rel=0.05)


def test_infinite_epsilon_releases_exact_counts():
    counts = np.array([[3, 0], [7, 1]])
    release = CountRelease()
    assert release.exact and release.noise_std(4) == 0.0
    released = release.release(counts, cells=4)
    np.testing.assert_array_equal(released, counts)
    assert released.dtype == np.float64 and released is not counts
    assert release.params() == {"dp_epsilon": "inf"}


def test_the_same_seed_gives_the_same_release():
    counts = np.arange(200, dtype=float)
    first = CountRelease(1.0, seed=42).release(counts, stream="popularity")
    assert np.array_equal(first, CountRelease(1.0, seed=42).release(counts, stream="popularity"))
    assert not np.array_equal(first, CountRelease(1.0, seed=43).release(counts, stream="popularity"))
    assert not np.array_equal(first, CountRelease(1.0, seed=42).release(counts, stream="online_ctr"))
    unseeded = CountRelease(1.0)  # the OS's generator: two releases differ
    assert not np.array_equal(unseeded.release(counts), unseeded.release(counts))
    assert "seed" not in repr(CountRelease(1.0, seed=42))  # a secret


@pytest.mark.parametrize("kwargs, message", [
    ({"epsilon": 0.0}, "epsilon=0.0: must be > 0"), ({"epsilon": -1.0}, "must be > 0"),
    ({"epsilon": float("nan")}, "must be > 0"), ({"epsilon": 1.0, "mechanism": "exponential"}, "mechanism"),
    ({"epsilon": 1.0, "delta": 0.0}, "delta"),
])
def test_a_bad_budget_is_refused(kwargs, message):
    with pytest.raises(PrivacyError, match=message):
        CountRelease(**kwargs)


@pytest.mark.parametrize("raw", ["0", "-0.5", "nan", "one"])
def test_settings_refuse_an_epsilon_that_is_not_positive(raw):
    with pytest.raises(SettingsError, match="LLMREC_DP_EPSILON") as error:
        Settings.from_env({"LLMREC_DP_EPSILON": raw})
    assert "\n" not in str(error.value)


def test_settings_carry_the_budget():
    settings = Settings.from_env({"LLMREC_DP_EPSILON": "0.5", "LLMREC_DP_MECHANISM": "gaussian",
                                  "LLMREC_DP_DELTA": "1e-5", "LLMREC_DP_SEED": "9"})
    assert settings.count_release == CountRelease(0.5, "gaussian", 1e-5, 9)
    assert "dp_seed" not in repr(settings)
    assert Settings.from_env({}).count_release.exact
    for name, raw in (("LLMREC_DP_MECHANISM", "laplacian"), ("LLMREC_DP_DELTA", "1.5"), ("LLMREC_DP_SEED", "x")):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: raw})


def test_the_cli_stops_at_start_with_one_line(monkeypatch, capsys, llmrec_home):
    monkeypatch.setenv("LLMREC_DP_EPSILON", "0")
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "llmrec: error: LLMREC_DP_EPSILON='0': epsilon must be > 0 (unset or inf: exact counts)"


class TestPrivatePopularity(RankerContract):
    """The popularity ranker on released counts keeps the whole ranker contract (pickling, determinism, ...)."""

    known_answer = False

    def make(self, data):
        return PopularityRanker(CountRelease(1.0, seed=3))


def test_popularity_ranker_ranks_by_the_released_counts():
    data = InteractionData.from_split(two_group_split())
    exact = PopularityRanker().fit(data)
    counts = np.asarray(data.train.getnnz(axis=0), dtype=np.float32)
    np.testing.assert_array_equal(exact.score(np.arange(2)), np.tile(counts, (2, 1)))
    np.testing.assert_array_equal(PopularityRanker(CountRelease()).fit(data).score(np.arange(2)),
                                  exact.score(np.arange(2)))
    release = CountRelease(0.5, seed=3)
    private = PopularityRanker(release).fit(data)
    expected = release.release(counts, stream="popularity").astype(np.float32)
    np.testing.assert_array_equal(private.score(np.arange(2)), np.tile(expected, (2, 1)))
    assert not np.array_equal(expected, counts)
    np.testing.assert_array_equal(private.popularity_, counts)  # the exact counts stay inside the platform


def online_frame(clicks_per_item: list[int], shown: int = 200) -> pd.DataFrame:
    """`online_ctr` over `shown` requests of one arm, each showing items a, b, c; item i clicked in the first
    clicks_per_item[i] requests."""
    impressions = pd.DataFrame({"request_id": [f"r{i}" for i in range(shown)], "user_id": "u", "model_version": "v1",
                                "ranker": "ease", "arm": "champion", "items": [["a", "b", "c"]] * shown,
                                "timestamp": 0})
    events = pd.DataFrame([{"request_id": f"r{r}", "item_id": item}
                           for item, n in zip("abc", clicks_per_item, strict=True) for r in range(n)])
    return online_ctr(impressions, events)


def test_private_online_ctr_is_exact_at_infinity_and_wider_with_noise():
    frame = online_frame([60, 30, 10])
    assert frame.loc[frame["position"] == 0, "clicks"].item() == 100  # 60 + 30 + 10 of 600 impressions
    pd.testing.assert_frame_equal(private_online_ctr(frame, CountRelease()), frame)
    exact_width = (frame["ci_high"] - frame["ci_low"]).to_numpy()
    for epsilon in (0.5, 4.0):
        private = private_online_ctr(frame, CountRelease(epsilon, seed=1))
        assert (private["clicks"] <= private["impressions"]).all() and (private["clicks"] >= 0).all()
        width = (private["ci_high"] - private["ci_low"]).to_numpy()
        assert (width > exact_width).all()
        # the noise term alone: z * sigma * sqrt(1 + ctr^2) / impressions, sigma = sqrt(2) * 4 / epsilon (Laplace)
        sigma = math.sqrt(2) * ONLINE_CELLS / epsilon
        noise_half = 1.959964 * sigma * np.sqrt(1 + private["ctr"] ** 2) / private["impressions"]
        inside = ((private["ci_low"] > 0) & (private["ci_high"] < 1)).to_numpy()  # not clipped to [0, 1]
        assert inside.any() and (width[inside] / 2 >= noise_half[inside] - 1e-12).all()
    assert private_online_ctr(frame, CountRelease(0.5, seed=1)).equals(private_online_ctr(frame, CountRelease(0.5, seed=1)))
    markdown = online_markdown(frame, CountRelease(0.5, seed=1))
    assert "differential privacy: laplace noise, epsilon 0.5" in markdown
    assert "differential privacy" not in online_markdown(frame)


def test_the_report_counts_users_exactly_or_with_noise():
    assert released_counts(943, CountRelease()) == {"users evaluated": "943", "differential privacy": "off (exact counts)"}
    release = CountRelease(1.0, seed=2)
    noisy = released_counts(943, release)
    assert noisy["users evaluated"] == str(round(943 + release.release([0.0], stream="report_users")[0]))
    assert noisy["differential privacy"] == "laplace noise, epsilon 1 per released table"


def test_dp_multvae_trains_on_a_tiny_dataset():
    data = InteractionData.from_split(two_group_split())
    settings = dict(hidden=8, latent=2, dropout=0.2, epochs=3, batch_size=4, learning_rate=1e-2, seed=3, num_threads=1)
    private = MultVAERanker(dp_epsilon=4.0, **settings).fit(data)
    again = MultVAERanker(dp_epsilon=4.0, **settings).fit(data)
    plain = MultVAERanker(**settings).fit(data)
    users = np.arange(data.n_users)
    scores = private.score(users)
    assert scores.shape == (data.n_users, data.n_items) and np.isfinite(scores).all()
    assert 0 < private.dp_spent_epsilon_ <= 4.0 + 1e-6  # the accountant's figure, within the budget
    np.testing.assert_array_equal(scores, again.score(users))  # seeded: the same noise
    assert not np.allclose(scores, plain.score(users))  # clipping and noise changed the fit
    assert plain.dp_spent_epsilon_ is None
    with pytest.raises(ValueError, match="dp_epsilon must be > 0"):
        MultVAERanker(dp_epsilon=0.0)


def test_popularity_asset_records_the_budget_in_mlflow(tmp_path):
    import dagster as dg

    from llmrec_platform.assets.rankers import popularity_ranker
    from llmrec_platform.resources import DatasetResource, ExperimentResource, TrackingResource

    @dg.asset(name="split")
    def split_asset() -> pa.Table:
        return pa.Table.from_pandas(two_group_split(), preserve_index=False)

    tracking = TrackingResource(home=str(tmp_path))
    result = dg.materialize(
        [split_asset, popularity_ranker],
        resources={"io_manager": dg.InMemoryIOManager(), "artifacts_io": dg.InMemoryIOManager(), "tracking": tracking,
                   "dataset": DatasetResource(source="ml-100k"),
                   "experiment": ExperimentResource(seed=5, dp_epsilon=0.5, dp_seed="7")})
    assert result.success
    trained = result.output_for_node("popularity_ranker")
    assert trained.ranker.release == CountRelease(0.5, seed=7)
    params = tracking.tracker().client.get_run(trained.mlflow_run_id).data.params
    assert params["dp_epsilon"] == "0.5" and params["dp_mechanism"] == "laplace"


def test_the_bundle_publishes_released_popularity():
    counts = np.array([0.0, 3.0, 250.0, 40.0])
    np.testing.assert_array_equal(published_popularity(counts, None), counts)
    np.testing.assert_array_equal(published_popularity(counts, CountRelease()), counts)
    release = CountRelease(0.5, seed=4)
    published = published_popularity(counts, release)
    np.testing.assert_array_equal(published, np.maximum(np.rint(release.release(counts, stream="popularity")), 0))
    assert (published >= 0).all() and not np.array_equal(published, counts)


@pytest.mark.slow
def test_the_pipeline_releases_its_aggregates_with_the_configured_epsilon(llmrec_home, tiny_dataset_dir, monkeypatch):
    """LLMREC_DP_EPSILON reaches the popularity ranker (MLflow params), the report (its line, the champion's tags) and
    the bundle's popularity column (the same noise as the ranker's under one seed)."""
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from llmrec_platform.cli import run_pipeline
    from llmrec_platform.serving.bundle import current_bundle, load_bundle

    monkeypatch.setenv("LLMREC_DP_EPSILON", "1")
    monkeypatch.setenv("LLMREC_DP_SEED", "3")
    paths, result = run_pipeline(str(tiny_dataset_dir), "recbole", fast=True)
    assert result.success
    report = result.output_for_node("evaluation_report")
    assert "- **differential privacy**: laplace noise, epsilon 1 per released table" in Path(report["report_path"]).read_text()
    client = MlflowClient(paths.mlflow_uri)
    [event] = result.asset_materializations_for_node("popularity_ranker")
    assert client.get_run(event.metadata["mlflow_run_id"].value).data.params["dp_epsilon"] == "1"
    bundle = load_bundle(current_bundle(paths.bundles))
    assert bundle.manifest["popularity_privacy"] == {"dp_epsilon": "1", "dp_mechanism": "laplace"}
    assert client.get_run(bundle.manifest["mlflow_run_id"]).data.tags["report_dp_epsilon"] == "1"
    exact = bundle.champion.popularity_
    # The champion's items come first; the rest of the catalogue has no training count to release.
    released = bundle.items["popularity"].to_numpy()
    np.testing.assert_array_equal(released[:len(exact)], published_popularity(exact, CountRelease(1.0, seed=3)))
    assert (released[len(exact):] == 0).all()
    assert not np.array_equal(bundle.items["popularity"], exact)
