"""
In-process cost of the broker's publish pipeline, per message, without sockets:
bytes into a publisher's protocol -> decode -> route -> encode-once -> the
subscribers' transports (which discard what they get). What remains beyond this in a
real run is the reactor and the kernel.

Not a test: it prints figures. C{python benchmarks/pipeline.py [--quick]}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from mqttbroker.broker import Broker, BrokerConfig
from mqttbroker.codec import Connect, Puback, Publish, Subscribe, Subscription, encode
from mqttbroker.protocol import MQTTServerFactory, MQTTServerProtocol
from mqttbroker.session import SessionLimits


class NullTransport:
    """Counts what is written; never fills up."""

    disconnecting = False

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writeSequence(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.written += len(chunk)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 1)

    def loseConnection(self) -> None:
        self.disconnecting = True


def _client(factory: MQTTServerFactory, client_id: str) -> tuple[MQTTServerProtocol, NullTransport]:
    proto = factory.buildProtocol(None)
    transport = NullTransport()
    proto.makeConnection(transport)  # type: ignore[arg-type]
    proto.dataReceived(encode(Connect(client_id, 4, keep_alive=60), 4))
    return proto, transport


def run(subscribers: int, qos: int, batch: int, rounds: int) -> float:
    """Microseconds of broker CPU per delivered message."""
    limits = SessionLimits(max_inflight=65535, max_queued_messages=0)
    factory = MQTTServerFactory(Broker(BrokerConfig(session_limits=limits)), clock=Clock())
    subs = []
    for n in range(subscribers):
        proto, _ = _client(factory, f"sub{n}")
        proto.dataReceived(encode(Subscribe(1, (Subscription("user/42", qos),)), 4))
        subs.append(proto)
    publisher, _ = _client(factory, "pub")
    pid = 1
    best = float("inf")
    for _ in range(rounds):
        data = []
        for _ in range(batch):
            data.append(
                encode(Publish("user/42", b"x" * 64, qos, packet_id=pid if qos else None), 4)
            )
            pid = pid % 65535 + 1
        stream = b"".join(data)
        acks = []
        if qos:
            for _ in subs:
                first = pid - batch
                acks.append(
                    b"".join(
                        encode(Puback((first + i - 1) % 65535 + 1), 4) for i in range(batch)
                    )
                )
        start = time.perf_counter()
        publisher.dataReceived(stream)
        for sub, ack in zip(subs, acks, strict=False):
            sub.dataReceived(ack)
        elapsed = time.perf_counter() - start
        best = min(best, elapsed / (batch * subscribers))
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 5 if args.quick else 20
    print(f"{'scenario':<34} {'us/delivery':>12} {'deliveries/s':>13}")
    for name, subscribers, qos, batch in [
        ("1 publisher -> 1 subscriber, QoS 0", 1, 0, 2000),
        ("1 publisher -> 1 subscriber, QoS 1", 1, 1, 2000),
        ("1 publisher -> 100 subscribers, QoS 0", 100, 0, 200),
        ("1 publisher -> 100 subscribers, QoS 1", 100, 1, 200),
    ]:
        cost = run(subscribers, qos, batch, rounds)
        print(f"{name:<34} {cost:>12.2f} {1e6 / cost:>13,.0f}")


if __name__ == "__main__":
    main()
