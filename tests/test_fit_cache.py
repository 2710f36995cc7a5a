"""The fit cache: a re-run on the same inputs loads the fitted ranker; any change to them fits again."""

from __future__ import annotations

import numpy as np

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.fit_cache import KEEP_PER_NAME, FitCache, derived_key
from llmrec_platform.testing import two_group_split


def fitter(ranker, data, calls):
    def fit():
        calls.append(ranker.reg_weight)
        return ranker.fit(data)
    return fit


def test_same_inputs_load_and_changed_inputs_refit(tmp_path):
    data = InteractionData.from_split(two_group_split())
    cache, calls = FitCache(tmp_path), []
    first, hit = cache.get_or_fit("ease", EASERanker(reg_weight=5.0), "data-a", fitter(EASERanker(reg_weight=5.0), data, calls))
    assert not hit and calls == [5.0]
    again, hit = cache.get_or_fit("ease", EASERanker(reg_weight=5.0), "data-a", fitter(EASERanker(reg_weight=5.0), data, calls))
    assert hit and calls == [5.0]  # not fitted again
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(again.score(users), first.score(users))
    _, hit = cache.get_or_fit("ease", EASERanker(reg_weight=5.0), "data-b", fitter(EASERanker(reg_weight=5.0), data, calls))
    assert not hit  # other data
    _, hit = cache.get_or_fit("ease", EASERanker(reg_weight=7.0), "data-a", fitter(EASERanker(reg_weight=7.0), data, calls))
    assert not hit and calls == [5.0, 5.0, 7.0]  # other parameters
    assert len(list((tmp_path / "ease").glob("*.pkl"))) == KEEP_PER_NAME  # older entries pruned


def test_an_unreadable_entry_is_refitted_and_no_folder_means_no_cache(tmp_path):
    data = InteractionData.from_split(two_group_split())
    cache, calls = FitCache(tmp_path), []
    cache.get_or_fit("ease", EASERanker(), "d", fitter(EASERanker(), data, calls))
    (entry,) = (tmp_path / "ease").glob("*.pkl")
    entry.write_bytes(b"not a pickle")
    _, hit = cache.get_or_fit("ease", EASERanker(), "d", fitter(EASERanker(), data, calls))
    assert not hit and len(calls) == 2
    off = FitCache(None)
    for _ in range(2):
        assert off.get_or_fit("ease", EASERanker(), "d", fitter(EASERanker(), data, calls))[1] is False
    assert len(calls) == 4


def test_the_key_does_not_depend_on_what_the_process_imported_first():
    """A warm run imports torch later than a cold one (nothing to encode): the key must not see that. (Both import
    the package first, as every entry point does: a process that loads numpy before it runs other kernels, and its
    key differs on purpose.)"""
    import subprocess
    import sys

    script = "from llmrec_platform.rankers.fit_cache import environment_digest; print(environment_digest())"
    digests = {subprocess.run([sys.executable, "-c", first + script], capture_output=True, text=True, check=True).stdout
               for first in ("", "import llmrec_platform, torch, lightgbm; ")}
    assert len(digests) == 1


def test_derived_results_are_keyed_on_fit_keys_and_an_unkeyed_one_is_never_cached(tmp_path):
    cache, calls = FitCache(tmp_path), []

    def compute():
        calls.append(1)
        return {"ndcg@10": 0.3}

    key = derived_key(2020, "ease", "k1")
    assert key == derived_key(2020, "ease", "k1") and key != derived_key(2021, "ease", "k1")
    assert cache.get_or_compute("suite", key, compute) == ({"ndcg@10": 0.3}, False)
    assert cache.get_or_compute("suite", key, compute) == ({"ndcg@10": 0.3}, True) and len(calls) == 1
    assert derived_key(2020, "ease", "") == ""  # a fit made without a key: its results are not cached either
    for _ in range(2):
        assert cache.get_or_compute("suite", "", compute)[1] is False
    assert len(calls) == 3


def test_the_streamed_key_is_the_key_of_the_whole_pickle():
    """`fit_key` streams the pickle into the hash (no copy of a large array); the key stays the hash of
    `pickle.dumps`, so entries cached before still load. An unfitted map holding a fitted EASE (its float32 B, the
    training matrix) and arrays in other layouts."""
    import hashlib
    import pickle

    import pandas as pd

    from llmrec_platform.rankers.collab_map import CollabMapRanker
    from llmrec_platform.rankers.fit_cache import environment_digest, fit_key

    data = InteractionData.from_split(two_group_split())
    vectors = np.random.default_rng(0).normal(size=(data.n_items, 4)).astype(np.float32)
    embeddings = pd.DataFrame({"item_id": list(data.item_ids), "embedding": list(vectors)})
    inputs = [CollabMapRanker(embeddings, 5.0, ease=EASERanker(5.0).fit(data)), np.asfortranarray(np.ones((300, 200))),
              np.arange(600.0).reshape(30, 20)[:, ::3], {"reg_weight": 5.0}]
    for unfitted in inputs:
        whole = hashlib.sha256(environment_digest().encode())
        whole.update(b"fingerprint")
        whole.update(pickle.dumps(unfitted, protocol=pickle.HIGHEST_PROTOCOL))
        assert fit_key(unfitted, "fingerprint") == whole.hexdigest()[:24]
    assert fit_key(inputs[1], "fingerprint") != fit_key(inputs[1] * 2, "fingerprint")
