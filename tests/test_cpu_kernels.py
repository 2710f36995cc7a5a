"""The same inputs give the same numbers on another CPU: the hybrid and its bases under forced kernel choices.

Another machine is stood in for by the variables that choose the libraries' kernels (another OpenBLAS core type,
MKL's compatible path, torch's generic ATen kernels). The package pins its own (kernels.py), so the scores must
be bit-identical; with LLMREC_CPU_KERNELS=native the same variables must change them, which shows the stand-in
really reaches the kernels."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from llmrec_platform.kernels import AVX2_PINS, CPU_KERNELS_ENV, cpu_has_avx2, pin_cpu_kernels

PROBE = textwrap.dedent("""
    import sys
    import llmrec_platform  # first, as the CLI and the code location do: it pins the kernels
    import numpy as np
    import pandas as pd
    import torch
    from threadpoolctl import threadpool_limits
    from llmrec_platform.data.interactions import InteractionData
    from llmrec_platform.rankers.content import LLMContentRanker
    from llmrec_platform.rankers.ease import EASERanker
    from llmrec_platform.rankers.implicit_models import ALSRanker, AdamBPRRanker
    from llmrec_platform.rankers.itemknn import ItemKNNRanker
    from llmrec_platform.rankers.multvae import MultVAERanker
    from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker

    threadpool_limits(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for u in range(160):
        group = rng.integers(0, 4)
        items = rng.choice(np.arange(group * 30, group * 30 + 60) % 120, size=16, replace=False)
        for pos, i in enumerate(items):
            fold = "train" if pos < 11 else ("valid" if pos < 14 else "test")
            rows.append((f"u{u}", f"i{i:03d}", float(rng.integers(3, 6)), 1000 + pos, fold))
    data = InteractionData.from_split(pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"]))
    items = rng.normal(size=(data.n_items, 16)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    users = (data.train @ items).astype(np.float32)
    users /= np.linalg.norm(users, axis=1, keepdims=True)
    content = LLMContentRanker(pd.DataFrame({"item_id": data.item_ids, "embedding": list(items)}),
                               pd.DataFrame({"user_id": data.user_ids, "embedding": list(users)})).fit(data)
    bases = {"ease": EASERanker(reg_weight=50).fit(data), "als": ALSRanker(factors=16).fit(data),
             "itemknn": ItemKNNRanker(k=20).fit(data),
             "bpr_adam": AdamBPRRanker(factors=16, epochs=4).fit(data),
             "multvae": MultVAERanker(hidden=48, latent=16, epochs=4).fit(data)}
    config = HybridConfig(n_candidates=20, n_estimators=30, min_child_samples=5, early_stopping_rounds=10, num_leaves=7,
                          seed=3, num_threads=1, pseudo_label_share=0.2)
    hybrid = HybridRanker(bases, content, config=config).fit(data)
    everyone = np.arange(data.n_users)
    np.savez(sys.argv[1], content=content.score(everyone), hybrid=hybrid.score(everyone),
             **{name: ranker.score(everyone) for name, ranker in bases.items()})
""")
# What another x86-64 CPU would make the libraries choose (each runs on any AVX2 machine; numpy's without AVX-512).
ANOTHER_CPU = {"OPENBLAS_CORETYPE": "Sandybridge", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41",
               "ATEN_CPU_CAPABILITY": "default", "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"}
needs_avx2 = pytest.mark.skipif(not cpu_has_avx2(), reason="the kernels are pinned on x86-64 CPUs with AVX2 only")


def scores(tmp_path: Path, name: str, **env: str) -> dict[str, np.ndarray]:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    out = tmp_path / f"{name}.npz"
    base = {k: v for k, v in os.environ.items() if k not in AVX2_PINS and k != CPU_KERNELS_ENV}
    subprocess.run([sys.executable, str(probe), str(out)], env={**base, **env}, check=True, timeout=300)
    with np.load(out) as saved:
        return {key: saved[key] for key in saved.files}


@needs_avx2
@pytest.mark.slow
def test_another_cpu_gives_identical_scores(tmp_path):
    here = scores(tmp_path, "here")
    elsewhere = scores(tmp_path, "elsewhere", **ANOTHER_CPU)
    for name in here:
        assert np.array_equal(here[name], elsewhere[name]), name
    # The control: without the pins the stand-in changes the numbers (so the comparison above could fail).
    native = scores(tmp_path, "native", **ANOTHER_CPU, **{CPU_KERNELS_ENV: "native"})
    moved = [name for name in here if name != "ease" and not np.array_equal(here[name], native[name])]
    assert moved, "the stand-in CPU changed no score: it no longer reaches the kernels"


def test_pins_apply_on_avx2_x86_and_not_when_native():
    env: dict[str, str] = {}
    pinned = pin_cpu_kernels(env)
    if cpu_has_avx2():
        assert pinned == AVX2_PINS and env == AVX2_PINS
    native = {CPU_KERNELS_ENV: "native", "OPENBLAS_CORETYPE": "Zen"}
    assert pin_cpu_kernels(native) == {} and native["OPENBLAS_CORETYPE"] == "Zen"


@needs_avx2
def test_importing_numpy_before_the_package_warns(tmp_path):
    """A script that loads numpy first runs the CPU's own kernels (how a benchmark script's hybrid once differed
    from the demo's): the package says so; loaded first, or with the pins inherited, it says nothing."""
    base = {k: v for k, v in os.environ.items() if k not in AVX2_PINS and k != CPU_KERNELS_ENV}

    def stderr(code: str, env: dict[str, str]) -> str:
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                              timeout=120).stderr

    assert "LateImportWarning" in stderr("import numpy; import llmrec_platform", base)
    assert "LateImportWarning" not in stderr("import llmrec_platform; import numpy", base)
    assert "LateImportWarning" not in stderr("import numpy; import llmrec_platform", {**base, **AVX2_PINS})


NUMERIC = {"numpy", "pandas", "scipy", "sklearn", "torch", "lightgbm", "duckdb", "pyarrow"}


def test_every_benchmark_imports_the_package_before_any_numeric_library():
    """A benchmark that loads numpy before the package runs the CPU's own kernels, so its numbers (tie orders,
    last bits) are not the pipeline's: ML-100K genre_match read 0.0262 in such a script against 0.0251 in the demo."""
    import ast

    late = []
    for script in sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")):
        for node in ast.parse(script.read_text()).body:
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            roots = {name.split(".")[0] for name in names}
            if "llmrec_platform" in roots:
                break
            if roots & NUMERIC:
                late.append(f"{script.name}: {sorted(roots & NUMERIC)[0]}")
                break
    assert not late, f"import llmrec_platform first in: {late}"
