"""The LLM-enhanced hybrid: settings (`config`), the histories one call ranks for (`batch`), candidate retrieval
(`candidates`), features (`features`) and the LambdaRank re-ranker (`model`)."""

from llmrec_platform.rankers.hybrid.batch import UserBatch
from llmrec_platform.rankers.hybrid.config import HybridConfig, HybridTrainingLog
from llmrec_platform.rankers.hybrid.features import FeatureContext, item_item_matrix
from llmrec_platform.rankers.hybrid.model import HybridRanker, RankingSet, concat_sets

__all__ = ["FeatureContext", "HybridConfig", "HybridRanker", "HybridTrainingLog", "RankingSet", "UserBatch",
           "concat_sets", "item_item_matrix"]
