"""Federated matrix factorisation (no Dagster, no Ray).

`mf`: BPR matrix factorisation in numpy: the one local update both trainings run, the central trainer, and the
ranker that scores with the factors (`BPRMFRanker`).
`flower`: the same model trained with Flower 1.42's message API: every user is a ClientApp node that keeps its
interest vector in its own `context.state`, the server runs Flower's FedAvgM strategy on the item factors only
(`FederatedBPRMFRanker`). See docs/security/federated.md.
"""
