"""
Recovery time: how long a broker takes, at start, to read its SQLite store and take
back every session and the messages owed to them, before it opens its listeners.

The store is filled directly (as a broker would have written it): SESSIONS persistent
sessions with one subscription each and MESSAGES queued QoS 1 messages spread over
them. Then the time to open the store, load it and rebuild the broker's state.

The recovery runs with the broker's cycle collector threshold (C{--gc-threshold},
50,000 by default, as C{twist mqtt} sets it before it loads the store); 0 keeps
Python's own.

Not a test: it prints figures.
C{python benchmarks/recovery.py [--quick] [--gc-threshold N]}.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, task

from mqttbroker.backends.sqlite import build
from mqttbroker.broker import Broker
from mqttbroker.persistence import (
    Change,
    PutDelivery,
    PutSession,
    PutSubscription,
    StoredDelivery,
    StoredMessage,
)


async def _fill(path: str, sessions: int, messages: int) -> None:
    store = build({"path": path, "compact_interval": "0"})
    per_session = max(1, messages // sessions)
    group: list[Change] = []
    seq = 0
    for n in range(sessions):
        client_id = f"device-{n}"
        group.append(PutSession(client_id, None, 0.0))
        group.append(PutSubscription(client_id, f"user/{n}/#", 1))
        for _ in range(per_session if seq < messages else 0):
            seq += 1
            message = StoredMessage(f"user/{n}/inbox", b"x" * 64, 1, False)
            group.append(PutDelivery(client_id, StoredDelivery(seq, message, 1)))
        if len(group) >= 3000:
            await store.apply(group)
            group = []
    if group:
        await store.apply(group)
    await store.close()


async def _recover(path: str) -> tuple[float, float, int, int]:
    began = time.perf_counter()
    store = build({"path": path, "compact_interval": "0"})
    snapshot = await store.load()
    loaded = time.perf_counter()
    broker = Broker()
    broker.restore(snapshot)
    restored = time.perf_counter()
    owed = sum(s.queued_count for s in broker.sessions.values())
    await store.close()
    return loaded - began, restored - loaded, len(broker.sessions), owed


def main(reactor: object, quick: bool, threshold: int) -> defer.Deferred[None]:
    async def run() -> None:
        cases = [(10_000, 10_000)] if quick else [(100_000, 100_000), (1_000, 100_000)]
        for sessions, messages in cases:
            directory = tempfile.mkdtemp(prefix="mqttbroker-recovery-")
            try:
                path = str(Path(directory) / "store.sqlite3")
                await _fill(path, sessions, messages)
                size = Path(path).stat().st_size / 1e6
                saved = gc.get_threshold()
                if threshold:
                    gc.set_threshold(threshold, *saved[1:])
                try:
                    load, restore, count, owed = await _recover(path)
                finally:
                    gc.set_threshold(*saved)
                print(
                    f"{count:>7} sessions, {owed:>7} queued messages ({size:.0f} MB): "
                    f"load {load:.2f} s + rebuild {restore:.2f} s = {load + restore:.2f} s"
                )
            finally:
                shutil.rmtree(directory, ignore_errors=True)

    return defer.ensureDeferred(run())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one small case")
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=50_000,
        help="the collector threshold while recovering, as the broker's option (0: Python's)",
    )
    arguments = parser.parse_args()
    task.react(main, [arguments.quick, arguments.gc_threshold])
