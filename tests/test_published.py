"""What a ranker artifact must hold: a TrainedRanker, or one clear error naming where it came from."""

import pickle

import pytest

from llmrec_platform.paths import Paths
from llmrec_platform.rankers.base import TrainedRanker
from llmrec_platform.rankers.published import load_ranker
from llmrec_platform.rankers.simple import PopularityRanker


def test_an_artifact_that_is_not_a_trained_ranker_is_named(tmp_path):
    artifacts = Paths(tmp_path).artifacts
    artifacts.mkdir(parents=True)
    with open(artifacts / "popularity_ranker", "wb") as handle:
        pickle.dump({"not": "a ranker"}, handle)
    with pytest.raises(TypeError, match=r"popularity_ranker holds a dict, not a TrainedRanker"):
        load_ranker(tmp_path, "popularity")


def test_a_trained_ranker_passes_the_check_unchanged():
    trained = TrainedRanker(PopularityRanker(), "run", "fingerprint", {}, 0.0)
    assert TrainedRanker.checked(trained, "here") is trained
    with pytest.raises(TypeError, match="here holds a PopularityRanker, not a TrainedRanker"):
        TrainedRanker.checked(PopularityRanker(), "here")
