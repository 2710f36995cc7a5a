"""Do clicks move the list in any genre? The genre-shift check of the live loop (no Dagster).

For users drawn at random (seeded) and for every genre that holds at most `max_share` of a user's current top
`k` and has `clicks` unseen catalogue items outside that list, the user clicks that genre's most popular such
items; the check records the genre's share of the next top `k` before and after, and whether a clicked item was
listed. Each (user, genre) pair starts from the user's own history: the pair's live events are dropped after it.
It runs against a `LiveService` in process (the same code the server runs).

    python -m llmrec_platform.evaluation.genre_shift <bundle folder> [--users 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_platform.live.events import Event, EventLog

UNKNOWN_GENRE = "unknown"


def genre_shift(service, n_users: int = 100, seed: int = 2020, k: int = 20, clicks: int = 3,
                max_share: int = 3, event_type: str = "click") -> pd.DataFrame:
    """(user_id, genre, before, after, clicked_listed) for every qualifying (user, genre) pair."""
    users = np.array(sorted(service.bundle.histories["user_id"].astype(str).unique()), dtype=object)
    users = np.random.default_rng(seed).choice(users, min(n_users, len(users)), replace=False)
    popularity = np.zeros(len(service.item_ids))
    known = service.bundle.items["popularity"].to_numpy(dtype=np.float64)
    popularity[:len(known)] = known
    by_popularity = np.lexsort((np.arange(len(popularity)), -popularity))  # most popular first, ties by position
    genres = sorted({g for gs in service.genres for g in gs} - {UNKNOWN_GENRE})
    members = {g: np.array([g in service.genres[p] for p in by_popularity]) for g in genres}
    rows = []
    stamp = int(time.time())  # clicks happen now, as on the server
    for user in users:
        service.live.pop(user, None)
        seen = set(service.history_arrays(user)[0].tolist())
        before = [service.item_position[i["item_id"]] for i in service.recommend(user, k).items]
        for genre in genres:
            share = sum(genre in service.genres[p] for p in before)
            if share > max_share:
                continue
            unseen = [int(p) for p in by_popularity[members[genre]] if p not in seen and p not in before][:clicks]
            if len(unseen) < clicks:
                continue
            for j, position in enumerate(unseen):
                service.apply(Event(user, str(service.item_ids[position]), event_type, timestamp=stamp + j))
            after = [service.item_position[i["item_id"]] for i in service.recommend(user, k).items]
            rows.append((user, genre, share, sum(genre in service.genres[p] for p in after), bool(set(after) & set(unseen))))
            service.live.pop(user, None)  # the next pair starts from the user's own history again
    return pd.DataFrame(rows, columns=["user_id", "genre", "before", "after", "clicked_listed"])


def per_genre(pairs: pd.DataFrame) -> pd.DataFrame:
    """(genre, pairs, rose, lost, mean before, mean after): the spread of the shift per genre."""
    return pairs.assign(rose=pairs["after"] > pairs["before"], lost=pairs["after"] < pairs["before"]).groupby(
        "genre").agg(pairs=("user_id", "size"), rose=("rose", "mean"), lost=("lost", "mean"),
                     before=("before", "mean"), after=("after", "mean")).reset_index()


def main() -> None:
    from llmrec_platform.serving.bundle import load_bundle
    from llmrec_platform.serving.service import LiveService
    from llmrec_platform.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path, help="a published bundle folder, e.g. .llmrec/bundles/current")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    settings = Settings.from_env()
    service = LiveService(load_bundle(args.bundle.resolve()), EventLog(Path(tempfile.mkdtemp())),
                          dict(settings.event_weights), settings.short_term)
    pairs = genre_shift(service, args.users, args.seed)
    rose, lost = (pairs["after"] > pairs["before"]).mean(), (pairs["after"] < pairs["before"]).mean()
    print(f"{len(pairs)} (user, genre) pairs of {pairs['user_id'].nunique()} users: share rose {rose:.1%}, "
          f"lost {lost:.1%}, a clicked item listed in {int(pairs['clicked_listed'].sum())}\n")
    print(per_genre(pairs).to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()
