"""The in-process reference of the Ray graph test, in a fresh process started the way the platform's processes are:
`llmrec_platform` imported before numpy and torch, so the CPU kernels are pinned (kernels.py) as in the pipeline
and on the Ray workers (pytest's own process loaded numpy before the package could pin it).

`python -m tests.compute.reference HOME OUT BLOCK_USERS`: re-evaluates HOME's fitted rankers in-process (in blocks
of BLOCK_USERS users, as the run did) and re-encodes its item texts, writing metrics.parquet, recommendations.parquet
and item_vectors.npy to OUT."""

import llmrec_platform  # noqa: F401, I001 - first: pins the CPU kernels before numpy and torch load

import pickle
import sys
from pathlib import Path

import duckdb
import numpy as np

from llmrec_platform.compute import InProcess
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.encoders.models import DEFAULT_MODEL, TextEncoder
from llmrec_platform.evaluation.suite import evaluate_suite
from llmrec_platform.settings import DEFAULT_NUM_THREADS
from llmrec_platform.threads import pin_blas_threads


def main(home: Path, out: Path, block_users: int) -> None:
    pin_blas_threads(DEFAULT_NUM_THREADS)  # as build_definitions does in every pipeline process
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        split = conn.execute("SELECT * FROM split").df()
        texts = conn.execute("SELECT text FROM item_texts ORDER BY item_id").df()["text"].tolist()
    trained = {}
    for path in sorted((home / "artifacts").glob("*_ranker")):
        fitted = pickle.loads(path.read_bytes())
        trained[fitted.ranker.name] = fitted
    suite = evaluate_suite(trained, InteractionData.from_split(split), seed=2020, top_k=20,
                           blocks=InProcess(block_users=block_users))
    suite.metrics.to_parquet(out / "metrics.parquet")
    suite.recommendations.to_parquet(out / "recommendations.parquet")
    np.save(out / "item_vectors.npy", TextEncoder(DEFAULT_MODEL, device="cpu").encode(texts)[0])


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
