"""The `onnx` encoder backend: a sentence-transformers model (transformer + mean pooling + normalisation) as one
ONNX graph, run by ONNX Runtime on the CPU, with the model folder's own fast tokenizer (`tokenizers`).

The graph is exported here, once, from the folder's torch weights (never downloaded) and kept under a cache
folder (`<home>/cache/encoders` in the pipeline), keyed by the model id; later runs load it without importing
torch or sentence-transformers. ONNX Runtime's MLAS picks its CPU kernels by CPUID, with no switch to pin them
(unlike torch, see kernels.py), so this path is opt-in: LLMREC_ENCODER_BACKEND=onnx. Needs the `onnx` extra
(`pip install -e '.[onnx]'`: onnxruntime, and onnx for the export).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

ONNX_OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxBackendError(RuntimeError):
    pass


def require_onnxruntime() -> None:
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        raise OnnxBackendError("the onnx encoder backend needs onnxruntime: pip install -e '.[onnx]' "
                               "(or set LLMREC_ENCODER_BACKEND=torch)")


def exported_file(cache_dir: Path, key: str) -> Path:
    """Where the exported graph of the model with id `key` lives under `cache_dir`."""
    return Path(cache_dir) / re.sub(r"[^A-Za-z0-9_.@-]+", "_", key) / f"opset{ONNX_OPSET}" / "model.onnx"


def _check_mean_pooling(folder: Path) -> None:
    modules = json.loads((folder / "modules.json").read_text()) if (folder / "modules.json").exists() else []
    pooling = [m for m in modules if m["type"].endswith("Pooling")]
    if pooling:
        config = json.loads((folder / pooling[0]["path"] / "config.json").read_text())
        modes = [k for k, v in config.items() if k.startswith("pooling_mode") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            raise OnnxBackendError(f"{folder}: the onnx backend exports mean-pooling models only (this one pools by "
                                   f"{modes}); use LLMREC_ENCODER_BACKEND=torch")


def export_onnx(folder: Path, target: Path) -> Path:
    """Export the model in `folder` (its torch weights) to `target`, atomically: a half-written file never loads."""
    _check_mean_pooling(folder)
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True).float().eval()
    transformer = model[0].auto_model

    class MeanPooled(torch.nn.Module):  # the sentence-transformers modules 0-2 in one graph
        def __init__(self):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    example = model.tokenizer(["an example", "a longer example sentence"], padding=True, return_tensors="pt")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / target.name
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer notes Python conditions on shapes; they are constant for an encoder given its mask.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                MeanPooled(), tuple(example[name] for name in INPUTS), str(partial), input_names=list(INPUTS),
                output_names=["sentence_embedding"], opset_version=ONNX_OPSET, dynamo=False,
                dynamic_axes={**{name: {0: "batch", 1: "tokens"} for name in INPUTS}, "sentence_embedding": {0: "batch"}},
            )
        os.replace(partial, target)
    return target


class OnnxSentenceEncoder:
    """Unit-norm sentence embeddings from the exported graph; `encode(texts)` pads each batch to its longest text."""

    def __init__(self, folder: Path, graph: Path, threads: int):
        require_onnxruntime()
        import onnxruntime as ort
        from tokenizers import Tokenizer

        config = folder / "sentence_bert_config.json"
        max_length = json.loads(config.read_text()).get("max_seq_length", 512) if config.exists() else 512
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Waiting threads sleep instead of spinning: on a shared 2-core machine spinning only burns the other steps' CPU.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.dim = int(self.encode_ids(self.token_ids([""])).shape[1])

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]

    def encode_ids(self, ids: list[list[int]]) -> np.ndarray:
        longest = max(len(row) for row in ids)
        input_ids = np.zeros((len(ids), longest), np.int64)
        attention = np.zeros_like(input_ids)
        for row, tokens in enumerate(ids):
            input_ids[row, :len(tokens)] = tokens
            attention[row, :len(tokens)] = 1
        feed = {"input_ids": input_ids, "attention_mask": attention, "token_type_ids": np.zeros_like(input_ids)}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)
