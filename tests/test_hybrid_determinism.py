"""The hybrid gives bit-identical scores under what differs between two runs or two machines (issue 23).

Each condition fits the base rankers and the hybrid in a fresh process, as a pipeline run does (the package
imported first, BLAS pinned to the pipeline's thread count), on a small synthetic split. What varies: the order
of the split's rows (DuckDB hands rows over in no fixed order), the CPUs the process may run on (one core, as
`taskset -c 0`), OMP_NUM_THREADS, and LightGBM's threads (1 or 2; the models after the first train side by side
in one case and one after another in the other). ItemKNN is a candidate ranker because its neighbour lists have
ties. Another CPU's kernels are covered by test_cpu_kernels.py."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

PROBE = textwrap.dedent("""
    import os, sys
    import llmrec_platform  # first, as the CLI and the code location: it pins the kernels
    import numpy as np
    import pandas as pd
    from llmrec_platform.threads import pin_blas_threads
    from llmrec_platform.data.interactions import InteractionData
    from llmrec_platform.rankers.content import LLMContentRanker
    from llmrec_platform.rankers.ease import EASERanker
    from llmrec_platform.rankers.genre import GenreMatchRanker
    from llmrec_platform.rankers.implicit_models import ALSRanker
    from llmrec_platform.rankers.itemknn import ItemKNNRanker
    from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker

    out, shuffle, lgb_threads, one_cpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    if one_cpu:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    pin_blas_threads(2)  # the pipeline's (settings.DEFAULT_NUM_THREADS)
    rng = np.random.default_rng(0)
    rows = []
    for u in range(120):
        group = rng.integers(0, 3)
        items = rng.choice(np.arange(group * 25, group * 25 + 50) % 75, size=15, replace=False)
        for pos, i in enumerate(items):
            fold = "train" if pos < 10 else ("valid" if pos < 13 else "test")
            rows.append((f"u{u:03d}", f"i{i:03d}", float(rng.integers(1, 6)), 1000 + pos // 2, fold))
    split = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"])
    if shuffle:
        split = split.sample(frac=1.0, random_state=shuffle).reset_index(drop=True)
    data = InteractionData.from_split(split)
    vectors = np.random.default_rng(1).normal(size=(data.n_items, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    users = (data.train @ vectors).astype(np.float32)
    users /= np.linalg.norm(users, axis=1, keepdims=True)
    content = LLMContentRanker(pd.DataFrame({"item_id": data.item_ids, "embedding": list(vectors)}),
                               pd.DataFrame({"user_id": data.user_ids, "embedding": list(users)})).fit(data)
    genres = pd.DataFrame({"item_id": data.item_ids, "genres": [["a", "b", "c"][int(i[1:]) % 3:] for i in data.item_ids]})
    bases = {"ease": EASERanker(reg_weight=20).fit(data), "itemknn": ItemKNNRanker(k=10).fit(data),
             "als": ALSRanker(factors=8, iterations=5).fit(data)}
    config = HybridConfig(n_candidates=12, n_estimators=25, min_child_samples=5, num_leaves=7, seed=5, n_models=3,
                          num_threads=lgb_threads, pseudo_label_share=0.2)
    hybrid = HybridRanker(bases, content, {"genre_match": GenreMatchRanker(genres).fit(data)}, config).fit(data)
    everyone = np.arange(data.n_users)
    np.savez(out, hybrid=hybrid.score(everyone), **{name: r.score(everyone) for name, r in bases.items()})
""")


def probe(tmp_path: Path, name: str, shuffle: int, lgb_threads: int, one_cpu: bool, **env: str) -> dict[str, np.ndarray]:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    out = tmp_path / f"{name}.npz"
    subprocess.run([sys.executable, str(script), str(out), str(shuffle), str(lgb_threads), "1" if one_cpu else "0"],
                   env={**os.environ, **env}, check=True, timeout=120)
    with np.load(out) as saved:
        return {key: saved[key] for key in saved.files}


def test_hybrid_scores_do_not_depend_on_row_order_cores_or_threads(tmp_path):
    here = probe(tmp_path, "here", shuffle=0, lgb_threads=2, one_cpu=False)
    there = probe(tmp_path, "there", shuffle=7, lgb_threads=1, one_cpu=True, OMP_NUM_THREADS="1")
    assert np.isfinite(here["hybrid"]).all() and len(np.unique(here["hybrid"])) > here["hybrid"].shape[1]
    for name in here:
        assert np.array_equal(here[name], there[name]), name
