"""Encoding throughput of the `item_embeddings` asset on a device (CPU here, CUDA where there is one).

Materializes the real asset (Dagster + DuckDB warehouse + DeviceResource) on the given device and
precision, twice (the second run must hit the cache), then sweeps the bare encoder over precisions
and batch sizes. Item texts come from a parquet file (item_id, text, text_hash) or are built here from
a dataset.

    python benchmarks/encode_throughput.py --dataset ml-1m --device cpu
    python benchmarks/encode_throughput.py --texts texts.parquet --model /path/to/model --device cuda
    python benchmarks/encode_throughput.py --dataset ml-100k --device cpu --no-asset \
        --paths before:fp32:128 torch:fp32:128 torch:fp32:32 onnx:fp32:32 torch:bf16:32
    python benchmarks/encode_throughput.py --dataset ml-100k --breakdown

`--breakdown` splits what a cold `item_embeddings` step spends on the default path (torch, fp32, batch 128) into
importing torch and sentence-transformers, loading the model and encoding, in CPU and wall seconds, and counts the
token positions the encoder computes (each batch padded to its longest text) against the real tokens, with the
achieved multiply-add rate of the transformer's matrix products.

`--paths` compares encoder paths on the CPU, backend:precision:batch: `before` is the encoder as it was before
token-length batching (sentence-transformers' own character-length sort, one call); each row gives wall and CPU
seconds (user + system of this process: less sensitive than wall time to other jobs on a shared machine) and the
smallest cosine of its vectors to the first row's.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def item_texts(args) -> pd.DataFrame:
    if args.texts:
        return pd.read_parquet(args.texts)
    from llmrec_platform.data.datasets import load_dataset
    from llmrec_platform.data.text import build_item_texts

    return build_item_texts(load_dataset(args.dataset).items)[0]


def materialize(texts: pd.DataFrame, home: Path, args) -> dict:
    import dagster as dg

    from llmrec_platform.assets.embeddings import item_embeddings
    from llmrec_platform.assets.ingest import raw_items
    from llmrec_platform.assets.text import item_texts as item_texts_asset
    from llmrec_platform.resources import (
        ComputeResource,
        DatasetResource,
        DeviceResource,
        EncoderResource,
        WarehouseIOManager,
        WarehouseResource,
    )
    from llmrec_platform.storage.warehouse import Warehouse

    warehouse = str(home / "warehouse.duckdb")
    Warehouse(warehouse).replace("item_texts", texts)
    result = dg.materialize(
        [raw_items, item_texts_asset, item_embeddings], selection=["item_embeddings"],
        resources={
            "io_manager": WarehouseIOManager(path=warehouse),
            "warehouse": WarehouseResource(path=warehouse),
            "dataset": DatasetResource(),  # raw_items is only an unselected upstream here
            "device": DeviceResource(device=args.device, precision=args.precision, batch_size=args.batch_size),
            "encoder": EncoderResource(model=args.model),
            "compute": ComputeResource(),  # in-process (no Ray address)
        },
    )
    [event] = result.asset_materializations_for_node("item_embeddings")
    return {k: v.value for k, v in event.metadata.items()}


def sweep(texts: list[str], args) -> list[dict]:
    import torch

    from llmrec_platform.encoders.models import TextEncoder, resolve_device

    device, _ = resolve_device(args.device)
    precisions = ["fp32", "fp16", "bf16"] if device.startswith("cuda") else ["fp32"]
    rows = []
    for precision in precisions:
        for batch_size in args.sweep_batches:
            encoder = TextEncoder(args.model, device=device, precision=precision, batch_size=batch_size)
            encoder.encode(texts[: batch_size * 2])  # warm-up (kernels, tokenizer)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            _, stats = encoder.encode(texts)
            rows.append({"device": device, "precision": precision, "batch_size": batch_size,
                         "texts": stats.encoded, "texts_per_s": round(stats.per_second, 1)})
    return rows


def compare_paths(texts: list[str], args) -> list[dict]:
    """Each backend:precision:batch path on the CPU, timed after a warm-up, against the first path's vectors."""
    import tempfile

    import numpy as np

    from llmrec_platform.encoders.models import TextEncoder

    rows, reference = [], None
    with tempfile.TemporaryDirectory() as exported:
        for path in args.paths:
            backend, precision, batch = path.split(":")
            start, cpu = time.perf_counter(), time.process_time()
            encoder = TextEncoder(args.model, device="cpu", precision=precision, batch_size=int(batch),
                                  backend="torch" if backend == "before" else backend, cache_dir=exported)
            load_s, load_cpu = time.perf_counter() - start, time.process_time() - cpu
            encoder.encode(texts[:64])  # warm-up (kernels, tokenizer)
            start, cpu = time.perf_counter(), time.process_time()
            if backend == "before":
                vectors = encoder.model.encode(texts, batch_size=int(batch), normalize_embeddings=True,
                                               convert_to_numpy=True, show_progress_bar=False)
            else:
                vectors, _ = encoder.encode(texts)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            reference = vectors if reference is None else reference
            rows.append({"path": path, "load_s": round(load_s, 1), "load_cpu_s": round(load_cpu, 1),
                         "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "texts_per_s": round(len(texts) / wall, 1),
                         "texts_per_cpu_s": round(len(texts) / cpu, 1),
                         "min_cosine": float(np.min(np.sum(np.asarray(vectors) * reference, axis=1)))})
            print(rows[-1], flush=True)
    return rows


def breakdown(texts: list[str], args) -> list[dict]:
    """The default path's cold costs, one by one, in a process that has not imported torch yet."""
    if "torch" in sys.modules:
        raise SystemExit("--breakdown needs a process without torch: it times the import")
    rows = []

    def timed(what: str, work):
        start, cpu = time.perf_counter(), time.process_time()
        result = work()
        rows.append({"what": what, "wall_s": round(time.perf_counter() - start, 2),
                     "cpu_s": round(time.process_time() - cpu, 2)})
        print(rows[-1], flush=True)
        return result

    import importlib

    # What the demo's process has loaded by then (Dagster, scikit-learn, SciPy): only the rest counts here.
    timed("import llmrec_platform.definitions", lambda: importlib.import_module("llmrec_platform.definitions"))
    timed("import torch", lambda: importlib.import_module("torch"))
    timed("import sentence_transformers", lambda: importlib.import_module("sentence_transformers"))
    from llmrec_platform.encoders.models import TextEncoder

    encoder = timed("load the model", lambda: TextEncoder(args.model, device="cpu", batch_size=args.batch_size))
    lengths = timed("tokenize (counting only)", lambda: [len(ids) for ids in encoder.model.tokenizer(
        texts, truncation=True, max_length=encoder.model.max_seq_length)["input_ids"]])
    timed(f"encode {len(texts)} texts", lambda: encoder.encode(texts))
    lengths = np.asarray(lengths)
    padded = sum(len(batch) * int(lengths[batch].max()) for batch in encoder.batches(texts))
    config = encoder.model[0].auto_model.config
    hidden, layers, inner = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    macs = padded * layers * (4 * hidden * hidden + 2 * hidden * inner)  # the linear layers; attention comes on top
    print(f"token positions computed {padded:,} (real tokens {int(lengths.sum()):,}); linear layers "
          f"{2 * macs / 1e12:.2f} TFLOP, {2 * macs / 1e9 / rows[-1]['cpu_s']:.1f} GFLOP per CPU second")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--texts", help="parquet with item_id, text, text_hash (instead of --dataset)")
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sweep-batches", type=int, nargs="*", default=[64, 256, 1024])
    parser.add_argument("--repeat", type=int, default=1, help="repeat the texts this many times in the sweep")
    parser.add_argument("--no-asset", action="store_true", help="only the bare-encoder sweep (no Dagster, no DuckDB)")
    parser.add_argument("--paths", nargs="*", default=[],
                        help="compare CPU encoder paths backend:precision:batch (backend: before, torch, onnx) "
                             "instead of the batch sweep")
    parser.add_argument("--breakdown", action="store_true",
                        help="time the default path's imports, model load and encoding one by one (see above)")
    args = parser.parse_args()
    texts = item_texts(args)
    if args.breakdown:
        print(pd.DataFrame(breakdown(texts["text"].tolist(), argparse.Namespace(**{**vars(args), "batch_size": 128}))))
        return 0
    print(f"{len(texts)} item texts; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in () if args.no_asset else ("cold", "cached"):
            start = time.perf_counter()
            meta = materialize(texts, Path(tmp), args)
            print(f"item_embeddings asset ({attempt}): {time.perf_counter() - start:.1f} s wall; "
                  + ", ".join(f"{k}={meta[k]}" for k in ("device", "precision", "dim", "encoded", "cached", "items_per_second")))
    texts_list = texts["text"].tolist() * args.repeat
    rows = compare_paths(texts_list, args) if args.paths else sweep(texts_list, args)
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
