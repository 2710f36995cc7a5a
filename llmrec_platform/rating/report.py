"""The rating section of the report: mean ± std per model beside Surprise's anchors, and the ablation."""

from __future__ import annotations

from llmrec_platform.rating.protocol import STACK, STACK_NO_LLM, SURPRISE_ANCHORS, CrossValidation

DESCRIPTIONS = {
    "baseline": "μ + b_u + b_i (ALS, like BaselineOnly)",
    "biased_mf": "biased MF (ALS)",
    "svdpp": "SVD++ (ALS, implicit feedback)",
    STACK_NO_LLM: "LightGBM over the three, without LLM features",
    STACK: "LightGBM over the three + LLM features",
}


def summary_markdown(result: CrossValidation) -> str:
    summary = result.summary()
    folds = int(result.metrics["fold"].nunique())
    lines = [f"## Rating prediction ({folds}-fold, random folds over all ratings)", "",
             "| model | what | RMSE (mean ± std) | MAE (mean ± std) | Surprise anchor (RMSE, ML-1M) |",
             "|---|---|---:|---:|---:|"]
    for model, row in summary.iterrows():
        anchor = SURPRISE_ANCHORS.get(model)
        lines.append(f"| {model} | {DESCRIPTIONS.get(model, '')} | {row.rmse_mean:.4f} ± {row.rmse_std:.4f} | "
                     f"{row.mae_mean:.4f} ± {row.mae_std:.4f} | {f'{anchor[0]} {anchor[1]:.3f}' if anchor else ''} |")
    ablation = result.ablation()
    if ablation:
        lines += ["", f"LLM features in the stacker: RMSE {ablation['rmse_with']:.4f} with, {ablation['rmse_without']:.4f} "
                      f"without, difference {ablation['diff']:+.4f} (better in {ablation['folds_better']} of "
                      f"{ablation['folds']} folds)."]
    return "\n".join(lines)
