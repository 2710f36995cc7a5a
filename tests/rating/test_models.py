"""The rating models on synthetic data whose answer is known."""

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.evaluation.metrics import rmse
from llmrec_platform.rating.data import RatingDataError, Ratings
from llmrec_platform.rating.models import BaselineModel, FactorModel


def frame(users, items, values) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [f"u{u:03d}" for u in users], "item_id": [f"i{i:03d}" for i in items],
                         "rating": values})


def test_the_baseline_recovers_known_biases():
    rng = np.random.default_rng(0)
    user_bias, item_bias = rng.normal(0, 0.5, 30), rng.normal(0, 0.7, 20)
    user_bias -= user_bias.mean()
    item_bias -= item_bias.mean()
    users, items = np.meshgrid(np.arange(30), np.arange(20), indexing="ij")
    values = 3.5 + user_bias[users.ravel()] + item_bias[items.ravel()]  # every pair, no noise
    data = Ratings.from_frame(frame(users.ravel(), items.ravel(), values))
    model = BaselineModel(reg_user=1e-9, reg_item=1e-9, epochs=5).fit(data)
    assert model.mu_ == pytest.approx(3.5)
    np.testing.assert_allclose(model.user_bias_, user_bias, atol=1e-6)
    np.testing.assert_allclose(model.item_bias_, item_bias, atol=1e-6)


def test_the_baseline_shrinks_the_bias_of_a_user_with_few_ratings():
    # u000 rated one item 5; u001 rated three items 3.
    data = Ratings.from_frame(frame([0, 1, 1, 1], [0, 0, 1, 2], [5.0, 3.0, 3.0, 3.0]))
    model = BaselineModel(reg_user=15.0, reg_item=10.0, epochs=1).fit(data)
    # μ = 14/4 = 3.5; first update with b_i = 0: b_u0 = (5 - 3.5) / (15 + 1), b_u1 = 3 * (3 - 3.5) / (15 + 3)
    assert model.user_bias_[0] == pytest.approx(1.5 / 16)
    assert model.user_bias_[1] == pytest.approx(-1.5 / 18)
    # then b_i0 = ((5 - 3.5 - b_u0) + (3 - 3.5 - b_u1)) / (10 + 2)
    assert model.item_bias_[0] == pytest.approx(((1.5 - 1.5 / 16) + (-0.5 + 1.5 / 18)) / 12)


@pytest.fixture(scope="module")
def low_rank():
    """200 users x 120 items, ratings = 3 + biases + a rank-3 product + small noise, 35 % observed."""
    rng = np.random.default_rng(1)
    n_users, n_items = 200, 120
    p, q = rng.normal(0, 0.6, (n_users, 3)), rng.normal(0, 0.6, (n_items, 3))
    full = 3.0 + rng.normal(0, 0.2, n_users)[:, None] + rng.normal(0, 0.3, n_items)[None] + p @ q.T
    users, items = np.nonzero(rng.random((n_users, n_items)) < 0.35)
    values = np.clip(full[users, items] + rng.normal(0, 0.1, len(users)), 1, 5)
    data = Ratings.from_frame(frame(users, items, values))
    test = rng.random(len(data)) < 0.2
    return data.subset(~test), data.subset(test)


@pytest.mark.parametrize("implicit", [False, True], ids=["biased_mf", "svdpp"])
def test_factor_models_beat_the_baseline_on_low_rank_ratings(low_rank, implicit):
    train, test = low_rank
    baseline = rmse(BaselineModel().fit(train).predict(test.users, test.items), test.values)
    model = FactorModel(factors=8, epochs=15, reg=0.02, implicit=implicit, seed=3).fit(train)
    score = rmse(model.predict(test.users, test.items), test.values)
    assert score < 0.6 * baseline, (score, baseline)
    assert model.train_rmse_[-1] <= model.train_rmse_[0]


def test_factor_models_are_deterministic_for_a_seed(low_rank):
    train, test = low_rank
    first, second, other = (FactorModel(factors=4, epochs=3, implicit=True, seed=s).fit(train) for s in (5, 5, 6))
    np.testing.assert_array_equal(first.predict(test.users, test.items), second.predict(test.users, test.items))
    assert not np.array_equal(first.predict(test.users, test.items), other.predict(test.users, test.items))


def test_predictions_stay_in_the_training_range_and_unseen_items_get_no_factors(low_rank):
    train, test = low_rank
    model = FactorModel(factors=4, epochs=3, seed=1).fit(train.subset(train.items != 0))
    assert model.predict(test.users, test.items).min() >= train.values.min()
    assert model.predict(test.users, test.items).max() <= train.values.max()
    assert not model.item_factors_[0].any() and model.item_bias_[0] == 0.0


def test_bad_ratings_are_named_by_row_and_field():
    bad = frame([0, 1], [0, 1], [4.0, 3.0]).astype({"rating": object})
    bad.loc[1, "rating"] = "five"
    with pytest.raises(RatingDataError, match="row 1: field 'rating' is 'five'"):
        Ratings.from_frame(bad)
    with pytest.raises(RatingDataError, match="rated item 'i000' twice"):
        Ratings.from_frame(frame([0, 0], [0, 0], [4.0, 3.0]))
