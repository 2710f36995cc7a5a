"""Early stopping on the validation fold (Mult-VAE, Adam-BPR) and their fused-Adam training across thread counts."""

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.rankers.implicit_models import AdamBPRRanker
from llmrec_platform.rankers.multvae import MultVAERanker


@pytest.fixture(scope="module")
def data() -> InteractionData:
    """160 users in 4 overlapping taste clusters of 60 items (out of 120); 16 items each: 11 train, 3 valid, 2 test."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(160):
        cluster = rng.integers(0, 4)
        items = rng.choice(np.arange(cluster * 30, cluster * 30 + 60) % 120, size=16, replace=False)
        for position, item in enumerate(items):
            fold = "train" if position < 11 else ("valid" if position < 14 else "test")
            rows.append((f"u{u}", f"i{item:03d}", 4.0, 1000 + position, fold))
    return InteractionData.from_split(pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"]))


def multvae(**kwargs) -> MultVAERanker:
    return MultVAERanker(**{"hidden": 32, "latent": 8, "epochs": 30, "batch_size": 32, "learning_rate": 3e-3,
                            "seed": 5, **kwargs})


def bpr_adam(**kwargs) -> AdamBPRRanker:
    return AdamBPRRanker(**{"factors": 16, "epochs": 30, "batch_size": 128, "learning_rate": 1e-2, "seed": 5, **kwargs})


FACTORIES = {"multvae": multvae, "bpr_adam": bpr_adam}


@pytest.mark.parametrize("name", FACTORIES)
def test_the_best_validated_epoch_is_kept(data, name):
    ranker = FACTORIES[name](epochs=16, patience=100, eval_every=3, eval_users=10_000).fit(data)  # all, no stop
    epochs, values = zip(*ranker.validation_curve_, strict=True)
    assert epochs == (3, 6, 9, 12, 15, 16)  # every third epoch and the last
    assert ranker.best_epoch_ == epochs[int(np.argmax(values))]  # the first of equal bests
    # What was kept is the best epoch's model: the ranker's own validation NDCG@10 is the curve's maximum.
    assert evaluate(ranker, data, "valid").summary["ndcg@10"] == pytest.approx(max(values), abs=1e-12)
    assert len(set(values)) > 1  # the curve moves, so keeping the best is a real choice


@pytest.mark.parametrize("name", FACTORIES)
def test_patience_stops_before_the_maximum_and_zero_turns_it_off(data, name):
    stopped = FACTORIES[name](epochs=200, patience=1, eval_every=1).fit(data)
    last_epoch = stopped.validation_curve_[-1][0]
    assert last_epoch < 200 and last_epoch == stopped.best_epoch_ + 1  # one evaluation without a gain
    full = FACTORIES[name](epochs=4, patience=0).fit(data)
    assert full.best_epoch_ is None and full.validation_curve_ is None
    again = FACTORIES[name](epochs=4, patience=0).fit(data)
    np.testing.assert_array_equal(full.score(np.arange(data.n_users)), again.score(np.arange(data.n_users)))


def test_fused_adam_steps_are_the_same_on_one_and_two_threads():
    import torch

    def steps(threads: int) -> torch.Tensor:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            generator = torch.Generator().manual_seed(0)
            weights = torch.randn(200, 500, generator=generator, requires_grad=True)
            optimizer = torch.optim.Adam([weights], lr=1e-2, fused=True)
            for _ in range(5):
                loss = (weights.sin() * torch.randn(200, 500, generator=generator)).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            return weights.detach().clone()
        finally:
            torch.set_num_threads(previous)

    assert torch.equal(steps(1), steps(2))


def test_adam_bpr_is_the_same_on_one_and_two_threads(data):
    users = np.arange(data.n_users)
    one, two = (bpr_adam(epochs=6, num_threads=threads).fit(data) for threads in (1, 2))
    np.testing.assert_array_equal(one.score(users), two.score(users))
    assert one.best_epoch_ == two.best_epoch_


@pytest.mark.parametrize("name", FACTORIES)
def test_the_machine_thread_count_does_not_change_a_fit(data, name):
    """The ranker runs its own `num_threads` torch threads; the BLAS and torch pools around it must not matter."""
    import torch
    from threadpoolctl import threadpool_limits

    users = np.arange(data.n_users)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with threadpool_limits(1):
            narrow = FACTORIES[name](epochs=6).fit(data)
        torch.set_num_threads(2)
        wide = FACTORIES[name](epochs=6).fit(data)
    finally:
        torch.set_num_threads(previous)
    np.testing.assert_array_equal(narrow.score(users), wide.score(users))
    assert narrow.validation_curve_ == wide.validation_curve_


@pytest.mark.parametrize("name", FACTORIES)
def test_bad_early_stopping_settings_are_refused(name):
    for setting, message in (({"patience": -1}, "patience"), ({"eval_every": 0}, "eval_every"),
                             ({"eval_users": 0}, "eval_users")):
        with pytest.raises(ValueError, match=message):
            FACTORIES[name](**setting)
