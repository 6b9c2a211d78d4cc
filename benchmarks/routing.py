"""
Route cost against the number of subscriptions: publishing to C{user/42} should cost
the same with 1,000 or 1,000,000 other users subscribed (exact filters live in a
dict, wildcard filters in a trie walked by topic levels).

Not a test: it prints figures. C{python benchmarks/routing.py [--quick]}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mqttbroker.topics import SubscriptionIndex

ROUNDS = 200_000


def _build(users: int, wildcards: int) -> SubscriptionIndex[int, int]:
    index: SubscriptionIndex[int, int] = SubscriptionIndex()
    for uid in range(users):
        index.add(f"user/{uid}", uid, 1)
    # Wildcard filters of other shapes (devices, groups): they share the trie but not
    # the user/ branch, as in a real deployment.
    for n in range(wildcards):
        index.add(f"devices/{n}/+/status", -n - 1, 0)
        index.add(f"groups/{n}/#", -n - 1, 0)
    return index


def _per_match(index: SubscriptionIndex[int, int], topic: str, rounds: int) -> float:
    match = index.match
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            match(topic)
        best = min(best, (time.perf_counter() - start) / rounds)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="stop at 100,000 subscriptions")
    args = parser.parse_args()
    sizes = [1_000, 100_000] if args.quick else [1_000, 100_000, 1_000_000]
    rounds = ROUNDS // 4 if args.quick else ROUNDS
    header = ("subscriptions", "wildcards", "user/42 us", "devices/7/x/status us")
    print(f"{header[0]:>14} {header[1]:>10} {header[2]:>11} {header[3]:>22}")
    for users in sizes:
        for wildcards in (0, users // 10):
            index = _build(users, wildcards)
            exact = _per_match(index, "user/42", rounds)
            wild = _per_match(index, "devices/7/x/status", rounds) if wildcards else float("nan")
            print(f"{users + 2 * wildcards:>14,} {2 * wildcards:>10,} {exact:>11.3f} {wild:>22.3f}")


if __name__ == "__main__":
    main()
