"""
Codec speed: decode and encode rates for PUBLISH (64-byte and 4 KiB payloads, QoS 0
and 1, MQTT 3.1.1 and 5.0) and for a SUBSCRIBE, plus the per-receiver cost of a
shared L{EncodedPublish}.

Not a test: it prints figures and never fails on a timing. Run it with
C{python benchmarks/codec.py [--quick]}.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mqttbroker.codec import (
    Decoder,
    EncodedPublish,
    Packet,
    PropertyId,
    Publish,
    Subscribe,
    Subscription,
    encode,
)

BATCH = 2000


def _best_rate(run: Callable[[], int], seconds: float) -> float:
    """Operations per second: the best of several timed rounds (least disturbed)."""
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        count = run()
        elapsed = time.perf_counter() - start
        best = max(best, count / elapsed)
        if time.perf_counter() > deadline:
            return best


def _decode_rate(packet: Packet, level: int, seconds: float) -> float:
    """Packets per second decoded from a buffer that holds BATCH of them."""
    stream = encode(packet, level) * BATCH

    def run() -> int:
        decoder = Decoder(protocol_level=level)
        count = 0
        for _ in decoder.feed(stream):
            count += 1
        assert count == BATCH
        return count

    return _best_rate(run, seconds)


def _encode_rate(packet: Packet, level: int, seconds: float) -> float:
    def run() -> int:
        for _ in range(BATCH):
            encode(packet, level)
        return BATCH

    return _best_rate(run, seconds)


def _shared_rate(packet: Publish, level: int, seconds: float) -> float:
    """Receivers per second served from one EncodedPublish (chunks, no join)."""
    encoded = EncodedPublish(packet, level)

    def run() -> int:
        chunks = encoded.chunks
        for pid in range(1, BATCH + 1):
            chunks(pid)
        return BATCH

    return _best_rate(run, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter rounds")
    args = parser.parse_args()
    seconds = 0.3 if args.quick else 1.5
    user_props = {PropertyId.USER_PROPERTY: [("k", "v")], PropertyId.MESSAGE_EXPIRY_INTERVAL: 60}
    cases: list[tuple[str, Packet, int]] = [
        ("PUBLISH QoS 0, 64 B, 3.1.1", Publish("user/12345", b"x" * 64), 4),
        ("PUBLISH QoS 1, 64 B, 3.1.1", Publish("user/12345", b"x" * 64, 1, packet_id=7), 4),
        ("PUBLISH QoS 0, 4 KiB, 3.1.1", Publish("user/12345", b"x" * 4096), 4),
        ("PUBLISH QoS 1, 4 KiB, 3.1.1", Publish("user/12345", b"x" * 4096, 1, packet_id=7), 4),
        ("PUBLISH QoS 0, 64 B, 5.0", Publish("user/12345", b"x" * 64), 5),
        (
            "PUBLISH QoS 1, 64 B, 5.0 + 2 props",
            Publish("user/12345", b"x" * 64, 1, packet_id=7, properties=user_props),
            5,
        ),
        (
            "SUBSCRIBE 3 filters, 3.1.1",
            Subscribe(
                9,
                (
                    Subscription("user/12345", 1),
                    Subscription("devices/+/status", 0),
                    Subscription("alerts/#", 2),
                ),
            ),
            4,
        ),
    ]
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.machine()}; best of {seconds:.1f} s of rounds of {BATCH}"
    )
    print(f"{'packet':<36} {'decode/s':>12} {'us':>7} {'encode/s':>12} {'us':>7}")
    for name, packet, level in cases:
        decode_rate = _decode_rate(packet, level, seconds)
        encode_rate = _encode_rate(packet, level, seconds)
        print(
            f"{name:<36} {decode_rate:>12,.0f} {1e6 / decode_rate:>7.2f} "
            f"{encode_rate:>12,.0f} {1e6 / encode_rate:>7.2f}"
        )
    print()
    print(f"{'shared PUBLISH, per receiver':<36} {'chunks/s':>12} {'us':>7}")
    for name, packet, level in cases[1:4:2]:
        assert isinstance(packet, Publish)
        rate = _shared_rate(packet, level, seconds)
        print(f"{name:<36} {rate:>12,.0f} {1e6 / rate:>7.2f}")


if __name__ == "__main__":
    main()
