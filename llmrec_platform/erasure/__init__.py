"""Erasure: forget users everywhere the platform put them (`llmrec forget`, `DELETE /users/{id}`); no Dagster.

`ledger` (the keyed-hash ledger, its tombstones and the resumable journal), `scrub` (users out of fitted
rankers and pickled results, and which models need a refit), `stores` (each store and how a user leaves it),
`forget` (the whole erasure, in order). docs/security/erasure.md is the user's guide.
"""

from llmrec_platform.erasure.forget import ErasureReport, finish_pending, forget
from llmrec_platform.erasure.ledger import Tombstones

__all__ = ["ErasureReport", "Tombstones", "finish_pending", "forget"]
