"""Federated BPR-MF with Flower (llmrec_platform.federated): it learns, the interest vectors stay on the devices,
the server applies the sum of the clients' updates, and the example script runs end to end on a tiny dataset."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.federated.flower import (
    INTEREST,
    USER_VECTOR,
    FederatedBPRMFRanker,
    FederatedSimulation,
    SecAggPlus,
)
from llmrec_platform.federated.mf import (
    BPRMFConfig,
    BPRMFRanker,
    initial_item_model,
    initial_user_vector,
    local_update,
    step_generator,
    user_positives,
)
from llmrec_platform.rankers.simple import PopularityRanker, RandomRanker
from llmrec_platform.testing import RankerContract, two_group_split

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "federated" / "run.py"
CONFIG = BPRMFConfig(factors=8, lr=0.1, user_lr=1.0, reg=0.01, seed=7)
ROUNDS = 15


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return InteractionData.from_split(two_group_split())


@pytest.fixture(scope="module")
def federated(data) -> FederatedBPRMFRanker:
    return FederatedBPRMFRanker(CONFIG, rounds=ROUNDS).fit(data)


def test_federated_model_learns_above_the_floors(federated, data):
    ndcg = {name: evaluate(ranker, data, ks=(10,)).summary["ndcg@10"]
            for name, ranker in [("federated", federated), ("random", RandomRanker(seed=1).fit(data)),
                                 ("popularity", PopularityRanker().fit(data))]}
    assert ndcg["federated"] > ndcg["popularity"] + 0.1, ndcg
    assert ndcg["federated"] > ndcg["random"] + 0.1, ndcg
    losses = federated.federation_.train_loss
    assert losses[ROUNDS] < losses[1], losses  # the clients' BPR loss falls over the rounds


def test_interest_vectors_never_reach_the_server(federated, data):
    report = federated.federation_
    assert report.clients == data.n_users
    # Every array any reply carried is item-shaped: item factors (items, factors) and item biases (items,).
    assert set(report.received_arrays) == {("arrays", "item_factors", (data.n_items, CONFIG.factors)),
                                           ("arrays", "item_bias", (data.n_items,))}
    assert all(count == ROUNDS * data.n_users for count in report.received_arrays.values())
    # ... while each device holds its own vector in its node state, which the harness reads for evaluation only.
    simulation = federated.simulation_
    for node, context in simulation.grid.contexts.items():
        vector = context.state[INTEREST][USER_VECTOR].numpy()
        assert vector.shape == (CONFIG.factors,)
        np.testing.assert_array_equal(vector, federated.user_factors_[simulation.devices[node].key])


def test_on_device_evaluation_matches_the_platform_evaluation(federated, data):
    on_device = federated.simulation_.evaluate_on_devices(data, "test")
    assert on_device == pytest.approx(evaluate(federated, data, ks=(10,)).summary["ndcg@10"], abs=1e-9)


def test_a_round_applies_the_sum_of_the_client_updates(data):
    """One round by hand: every client starts from the initial model; the server adds up their changes."""
    simulation = FederatedSimulation(data.train, CONFIG)
    simulation.train(rounds=1)
    factors, bias = initial_item_model(data.n_items, CONFIG)
    expected_factors, expected_bias = factors.copy(), bias.copy()
    for user, positives in enumerate(user_positives(data.train)):
        local_factors, local_bias = factors.copy(), bias.copy()
        local_update(local_factors, local_bias, initial_user_vector(CONFIG, user), positives,
                     step_generator(CONFIG, 0, user), CONFIG)
        expected_factors += local_factors - factors
        expected_bias += local_bias - bias
    got_factors, got_bias = simulation.item_factors()
    np.testing.assert_allclose(got_factors, expected_factors, atol=1e-6)
    np.testing.assert_allclose(got_bias, expected_bias, atol=1e-6)
    assert not np.allclose(got_factors, factors)


def test_secure_aggregation_gives_the_same_model_and_the_server_sees_no_update(data):
    """Under SecAgg+ no reply carries an array (only masked vectors and key shares); the unmasked sum equals the
    plain one up to the quantisation step."""
    plain, secure = FederatedSimulation(data.train, CONFIG), FederatedSimulation(data.train, CONFIG, secure=SecAggPlus(5, 3))
    plain.train(rounds=2)
    report = secure.train(rounds=2)
    assert report.received_arrays == {}
    assert report.bytes_from_clients > 0
    for got, expected in zip(secure.item_factors(), plain.item_factors(), strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(secure.collect_user_vectors(), plain.collect_user_vectors(), atol=1e-5)


def test_secure_aggregation_refuses_an_update_it_would_clip(data):
    with pytest.raises(ValueError, match="exceeds the SecAgg\\+ clipping range"):
        FederatedSimulation(data.train, CONFIG, secure=SecAggPlus(5, 3, clipping_range=1e-4)).train(rounds=1)
    with pytest.raises(ValueError, match="num_shares must be odd"):
        SecAggPlus(num_shares=6)


def test_pickled_ranker_scores_the_same_without_the_simulation(federated, data, tmp_path):
    restored = pickle.loads(pickle.dumps(federated))
    assert not hasattr(restored, "simulation_")
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(restored.score(users), federated.score(users))


def test_bad_settings_fail_with_a_clear_message(data):
    with pytest.raises(ValueError, match="factors must be at least 1"):
        BPRMFConfig(factors=0)
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        FederatedSimulation(data.train, CONFIG).train(rounds=0)
    with pytest.raises(ValueError, match="at least 2 users"):
        FederatedSimulation(data.train[:1], CONFIG)


class TestCentralBPRMFContract(RankerContract):
    exact_fold_in = False

    def make(self, data):
        return BPRMFRanker(CONFIG, epochs=ROUNDS)


class TestFederatedBPRMFContract(RankerContract):
    exact_fold_in = False

    def make(self, data):
        return FederatedBPRMFRanker(CONFIG, rounds=ROUNDS)


def test_example_script_prints_the_comparison(tiny_dataset_dir):
    run = subprocess.run([sys.executable, str(EXAMPLE), "--dataset", str(tiny_dataset_dir), "--rounds", "3",
                          "--factors", "8"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    for line in ("BPR-MF central (3 epochs)", "BPR-MF federated (3 rounds x 1)", "computed on the devices",
                 "(no interest vector)", "wall time:"):
        assert line in run.stdout, run.stdout
