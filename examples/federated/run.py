"""Federated vs central BPR matrix factorisation on the platform's own split, with Flower 1.42.

    .venv/bin/python examples/federated/run.py                 # ML-100K, 20 rounds of 1 local epoch
    .venv/bin/python examples/federated/run.py --rounds 40 --local-epochs 1 --factors 32
    .venv/bin/python examples/federated/run.py --rounds 5 --secagg      # adds the same federation under SecAgg+

Every training user of the split is a Flower client node; the server's global model is the item factors and
biases (FedAvgM over the clients' updates), each client's interest vector stays in its node state. The central
model is the same BPR-MF with the same hyper-parameters trained for rounds x local-epochs epochs. Both are scored
by the platform's evaluation (`llmrec_platform.evaluation.evaluate`: full ranking, train and valid items excluded,
test fold) next to the popularity and random floors; the federated model is also evaluated on the devices (one
Flower evaluation round: each device ranks with its own vector and sends back only its NDCG@10). With --secagg the
federation runs once more under Flower's SecAgg+ (about 40 s a round on ML-100K on a 2-core machine).
See docs/security/federated.md.
"""

from __future__ import annotations

import argparse
import logging
import time

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.federated.flower import FederatedBPRMFRanker, SecAggPlus
from llmrec_platform.federated.mf import BPRMFConfig, BPRMFRanker
from llmrec_platform.rankers.simple import PopularityRanker, RandomRanker

METRICS = ("ndcg@10", "recall@10", "hit@10")


def main(argv: list[str] | None = None) -> None:
    defaults = BPRMFConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k", help="a packaged dataset, GroupLens folder or dataset config")
    parser.add_argument("--rounds", type=int, default=20, help="federated rounds (central epochs = rounds x local epochs)")
    parser.add_argument("--local-epochs", type=int, default=1, help="BPR steps each client takes per round")
    parser.add_argument("--factors", type=int, default=defaults.factors)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="item factor step size")
    parser.add_argument("--user-lr", type=float, default=defaults.user_lr, help="interest vector step size")
    parser.add_argument("--reg", type=float, default=defaults.reg)
    parser.add_argument("--seed", type=int, default=2020, help="seeds the split and the model")
    parser.add_argument("--secagg", action="store_true", help="also run the federation under SecAgg+ (slow: see above)")
    parser.add_argument("--verbose", action="store_true", help="show Flower's per-round log")
    args = parser.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.INFO if args.verbose else logging.ERROR)

    start = time.perf_counter()
    dataset = load_dataset(args.dataset)
    split_config = SplitConfig(seed=args.seed)
    split = split_interactions(prepare_interactions(dataset.ratings, dataset.items, split_config.min_rating,
                                                    split_config.core), split_config)
    data = InteractionData.from_split(split)
    config = BPRMFConfig(factors=args.factors, lr=args.lr, user_lr=args.user_lr, reg=args.reg, seed=args.seed)
    epochs = args.rounds * args.local_epochs
    print(f"{args.dataset}: {data.n_users} users (= clients), {data.n_items} items, {data.train.nnz} training "
          f"interactions; {args.rounds} rounds x {args.local_epochs} local epoch(s) = {epochs} epochs")

    federated = FederatedBPRMFRanker(config, rounds=args.rounds, local_epochs=args.local_epochs)
    models = [("random", RandomRanker(seed=args.seed)), ("popularity", PopularityRanker()),
              (f"BPR-MF central ({epochs} epochs)", BPRMFRanker(config, epochs=epochs)),
              (f"BPR-MF federated ({args.rounds} rounds x {args.local_epochs})", federated)]
    if args.secagg:
        models.append((f"BPR-MF federated + SecAgg+ ({args.rounds} x {args.local_epochs})",
                       FederatedBPRMFRanker(config, rounds=args.rounds, local_epochs=args.local_epochs, secure=SecAggPlus())))
    rows = []
    for label, ranker in models:
        fit_start = time.perf_counter()
        ranker.fit(data)
        fit_seconds = time.perf_counter() - fit_start
        summary = evaluate(ranker, data, fold="test", ks=(10,)).summary
        rows.append((label, *(summary[m] for m in METRICS), fit_seconds))
    on_device = federated.simulation_.evaluate_on_devices(data, "test")
    report = federated.federation_

    print(f"\n{'model':<44} {'NDCG@10':>8} {'Recall@10':>9} {'Hit@10':>7} {'fit s':>7}")
    for label, ndcg, recall, hit, seconds in rows:
        print(f"{label:<44} {ndcg:>8.4f} {recall:>9.4f} {hit:>7.4f} {seconds:>7.1f}")
    print(f"\nfederated NDCG@10 computed on the devices (one Flower evaluation round): {on_device:.4f}")
    print(f"federated / central NDCG@10: {rows[3][1] / rows[2][1]:.3f}")
    print(f"communication: {report.bytes_to_clients / 1e6:.1f} MB to clients, {report.bytes_from_clients / 1e6:.1f} MB "
          f"back ({report.bytes_from_clients / report.rounds / report.clients / 1e3:.1f} kB per client per round)")
    if args.secagg:
        secure = models[-1][1].federation_
        print(f"SecAgg+: {secure.bytes_to_clients / 1e6:.1f} MB to clients, {secure.bytes_from_clients / 1e6:.1f} MB back "
              f"(masked vectors and key shares, 4 messages a round); arrays the server received: "
              f"{len(secure.received_arrays)}; {secure.seconds / secure.rounds:.1f} s a round")
    received = ", ".join(f"{record}/{name} {shape}" for record, name, shape in sorted(report.received_arrays))
    print(f"arrays the server received (federated, plain): {received} (no interest vector)")
    print(f"wall time: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
