"""Write docs/architecture.md: the asset graph drawn from the Dagster definitions, so the picture cannot drift.

    python scripts/asset_graph.py           # rewrite docs/architecture.md
    python scripts/asset_graph.py --check   # exit 1 when the page differs from the code (what the test asserts)

It loads `llmrec_platform.definitions` and draws the graph of the default settings (not this shell's LLMREC_*
variables), as Mermaid flowcharts: one of the asset groups, one of every asset inside its group. Everything is
sorted, so the same code gives the same page byte for byte. A group without a line in GROUP_ROLES stops the
script: a new group gets its sentence here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"
COMMAND = "python scripts/asset_graph.py"
DEFAULT_JOB = "full_pipeline"  # `llmrec demo` and `llmrec run`

# What each group is for, in one line (the assets in it are listed from the code).
GROUP_ROLES = {
    "ingest": "the dataset's ratings (monthly partitions), items and users, every row validated; bad rows go to "
              "the quarantine",
    "text": "the texts the language model reads: one per item, one profile per user",
    "split": "the protocol's interactions and their train / valid / test folds",
    "embeddings": "LLM text embeddings of items and users (ask for the GPU; cached by text hash)",
    "rankers": "every ranker, fitted on the train fold; the hybrid re-ranks the candidates of the others",
    "evaluation": "full-ranking metrics of every ranker, the champion, and the hybrid's ablation",
    "serving": "the champion's top-k per user, and the file bundle the HTTP API serves",
    "finetune": "the encoder fine-tuned on the split, the rankers that use it, and generated item descriptions",
    "rating": "rating prediction (k-fold RMSE / MAE), a task of its own",
}


class GraphError(Exception):
    pass


def load_definitions():
    """The code location's definitions under the default settings."""
    from llmrec_platform.definitions import build_definitions
    from llmrec_platform.settings import Settings

    return build_definitions(settings=Settings.from_env({}))


def graph_parts(defs) -> tuple[dict[str, list[str]], dict[str, list[str]], set[str], dict[str, object]]:
    """(group -> its assets, asset -> its inputs, the partitioned assets, job name -> job definition), sorted."""
    nodes = defs.resolve_asset_graph().asset_nodes
    groups: dict[str, list[str]] = {}
    inputs: dict[str, list[str]] = {}
    partitioned = set()
    for node in nodes:
        name = node.key.to_user_string()
        groups.setdefault(node.group_name, []).append(name)
        inputs[name] = sorted(parent.to_user_string() for parent in node.parent_keys)
        if node.is_partitioned:
            partitioned.add(name)
    undescribed = sorted(set(groups) - set(GROUP_ROLES))
    if undescribed:
        raise GraphError(f"asset group(s) {undescribed} have no line in GROUP_ROLES of {Path(__file__).name}: add one")
    jobs = {job.name: defs.resolve_job_def(job.name) for job in defs.jobs}
    return ({g: sorted(a) for g, a in sorted(groups.items())}, dict(sorted(inputs.items())), partitioned,
            dict(sorted(jobs.items())))


def job_assets(job) -> set[str]:
    return {key.to_user_string() for key in job.asset_layer.executable_asset_keys}


def group_flowchart(groups: dict[str, list[str]], inputs: dict[str, list[str]], outside: set[str]) -> list[str]:
    """Groups as boxes; an arrow where an asset of one group is an input of an asset of another."""
    group_of = {asset: group for group, assets in groups.items() for asset in assets}
    lines = ["```mermaid", "flowchart LR"]
    lines += [f'  {group}_group["{group} ({len(assets)})"]' for group, assets in groups.items()]
    edges = sorted({(group_of[parent], group_of[child]) for child, parents in inputs.items() for parent in parents
                    if group_of[parent] != group_of[child]})
    lines += [f"  {source}_group --> {target}_group" for source, target in edges]
    lines += _outside_style([f"{g}_group" for g, assets in groups.items() if set(assets) <= outside])
    return lines + ["```"]


def asset_flowchart(groups: dict[str, list[str]], inputs: dict[str, list[str]], partitioned: set[str],
                    outside: set[str]) -> list[str]:
    """Every asset inside its group's subgraph; an arrow from each input to the asset that takes it."""
    lines = ["```mermaid", "flowchart LR"]
    for group, assets in groups.items():
        lines.append(f"  subgraph {group}_group [{group}]")
        lines += [f'    {asset}["{asset} (monthly partitions)"]' if asset in partitioned else f"    {asset}"
                  for asset in assets]
        lines.append("  end")
    lines += [f"  {parent} --> {child}" for child, parents in inputs.items() for parent in parents]
    lines += _outside_style(sorted(outside))
    return lines + ["```"]


def _outside_style(names: list[str]) -> list[str]:
    """Dashed: what the default job leaves out."""
    if not names:
        return []
    return ["  classDef outside stroke-dasharray: 5 5", f"  class {','.join(names)} outside"]


def render(defs) -> str:
    """The page, Markdown with Mermaid flowcharts."""
    groups, inputs, partitioned, jobs = graph_parts(defs)
    default = job_assets(jobs[DEFAULT_JOB])
    outside = set(inputs) - default
    n_edges = sum(len(parents) for parents in inputs.values())
    lines = [
        f"<!-- Generated by `{COMMAND}` from llmrec_platform.definitions; do not edit by hand. -->",
        "",
        "# Architecture",
        "",
        f"The asset graph as the code defines it: {len(inputs)} Dagster assets in {len(groups)} groups, and "
        f"{n_edges} arrows, each a real input (an asset takes the assets that point to it as function arguments; "
        "nothing loads \"the latest thing from a folder\"). This page is written by a script from "
        f"`llmrec_platform.definitions` (default settings): run `{COMMAND}` after changing the graph. "
        "`tests/test_architecture_doc.py` regenerates it and fails when this page differs from the code.",
        "",
        "Around the graph, the rule that keeps the house clean: the assets (`llmrec_platform/assets/`) are thin, "
        "and call domain code (`data/`, `encoders/`, `rankers/`, `evaluation/`, `live/`, `serving/`, `storage/`) "
        "that never imports Dagster. The same domain code serves the batch graph, the events refresh and the "
        "HTTP API.",
        "",
        "## The groups",
        "",
        f"A box per asset group (its number of assets); an arrow where an asset of one group is an input of an "
        f"asset of another. Dashed: not in the default job `{DEFAULT_JOB}` (what `llmrec demo` and `llmrec run` "
        "materialize).",
        "",
        *group_flowchart(groups, inputs, outside),
        "",
        f"| group | what it holds | assets | in `{DEFAULT_JOB}` |",
        "|---|---|---|---|",
    ]
    for group, assets in groups.items():
        inside = sum(asset not in outside for asset in assets)
        share = "all" if inside == len(assets) else "none" if not inside else f"{inside} of {len(assets)}"
        lines.append(f"| `{group}` | {GROUP_ROLES[group]} | {', '.join(f'`{a}`' for a in assets)} | {share} |")
    lines += [
        "",
        "## Every asset",
        "",
        "Each asset inside its group; an arrow from each input to the asset that takes it. Dashed: not in "
        f"`{DEFAULT_JOB}`.",
        "",
        *asset_flowchart(groups, inputs, partitioned, outside),
        "",
        "## Jobs",
        "",
        "The named jobs, and how many assets each materializes (an op job runs code that is not an asset).",
        "",
        "| job | assets | what it does |",
        "|---|---:|---|",
    ]
    for name, job in jobs.items():
        count = len(job_assets(job)) or "ops"
        lines.append(f"| `{name}` | {count} | {' '.join((job.description or '').split())} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/architecture.md differs from the code")
    args = parser.parse_args(argv)
    try:
        page = render(load_definitions())
    except GraphError as exc:
        print(f"asset_graph: error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != page:
            print(f"{PAGE.relative_to(ROOT)} differs from the code: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
