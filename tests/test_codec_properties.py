# -*- test-case-name: tests.test_codec_properties -*-
"""
Property tests (hypothesis) for the MQTT codec in L{mqttbroker.codec}.

What must hold for every packet that L{tests.strategies} can build, at every
protocol level (3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0):

  - round trip: C{decode_all(encode(p, level), level) == [p]};
  - chunking invariance: a stream of encoded packets decodes to the same list
    however it is cut into chunks (down to single bytes, empty chunks included);
  - L{EncodedPublish.for_packet_id} equals C{encode} of the packet with that
    identifier and DUP flag;
  - robustness: random and mutated byte streams make the decoder yield packets or
    raise L{RemoteProtocolError} (with a L{ReasonCode} and a message), nothing else;
    what it yields can be encoded again and round-trips;
  - memory bound: the decoder refuses an oversized packet on its fixed header and
    never holds more than C{max_packet_size} bytes;
  - the remaining length limit: 268,435,455 is a size, a fifth length byte is
    malformed;
  - the encoder refuses, with L{LocalProtocolError}, what cannot be expressed.

Budgets keep the module well under a minute on two cores. For a longer run set
C{MQTTBROKER_HYPOTHESIS_EXAMPLES=N} (every property then tries N examples) or
C{HYPOTHESIS_PROFILE=thorough} (1,000 examples each; C{ci} and C{dev} profiles
are registered as well).
"""

from __future__ import annotations

import itertools
import os
import traceback
from collections.abc import Callable, Generator, Iterable
from dataclasses import replace
from typing import Any, cast

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mqttbroker.codec import (
    ALLOWED_REASON_CODES,
    MAX_PACKET_SIZE,
    Auth,
    Connack,
    Connect,
    Decoder,
    Disconnect,
    EncodedPublish,
    LocalProtocolError,
    Packet,
    PacketType,
    Properties,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    RemoteProtocolError,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    decode_all,
    encode,
)
from tests import strategies as S  # noqa: N812 (short alias, read as a namespace)

# --- budgets -------------------------------------------------------------------

_EXAMPLES_VARIABLE = "MQTTBROKER_HYPOTHESIS_EXAMPLES"
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile("dev", max_examples=10, deadline=None)
settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
_PROFILE = os.environ.get("HYPOTHESIS_PROFILE")
if _PROFILE:
    settings.load_profile(_PROFILE)


def _budget(examples: int) -> settings:
    """
    Hypothesis settings for one property: C{examples} examples by default, or what
    C{MQTTBROKER_HYPOTHESIS_EXAMPLES} or the C{HYPOTHESIS_PROFILE} profile asks for.
    No deadline: a rare 65,535-byte field makes single examples slow.
    """
    override = os.environ.get(_EXAMPLES_VARIABLE)
    if override:
        return settings(max_examples=int(override), deadline=None, suppress_health_check=_HEALTH)
    if _PROFILE:
        return settings(deadline=None, suppress_health_check=_HEALTH)
    return settings(max_examples=examples, deadline=None, suppress_health_check=_HEALTH)


#: The largest packet the decoder can ever be asked to accept (header included).
_LARGEST = MAX_PACKET_SIZE
assert _LARGEST == 1 + 4 + S.MAX_VARIABLE_BYTE_INTEGER

# --- helpers -------------------------------------------------------------------


def _encode_all(packets: Iterable[Packet], level: int) -> bytes:
    return b"".join(encode(p, level) for p in packets)


def _split(data: bytes, cuts: list[int] | None) -> list[bytes]:
    """
    C{data} cut at C{cuts} (repeated cuts give empty chunks); C{None} means one
    byte per chunk.
    """
    if cuts is None:
        return [data[i : i + 1] for i in range(len(data))]
    points = [0, *sorted(min(max(c, 0), len(data)) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _cuts(length: int) -> st.SearchStrategy[list[int] | None]:
    """Where to cut a stream of C{length} bytes: anywhere, or after every byte."""
    return st.one_of(
        st.none(),
        st.lists(st.integers(0, length), max_size=min(length + 2, 24)),
    )


def _varint(value: int) -> bytes:
    """A Variable Byte Integer (written here, independent of the codec)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _too_long_strings() -> st.SearchStrategy[str]:
    """
    Strings of 65,536 to 65,540 UTF-8 bytes, some with fewer than 65,536
    characters (so a character count would wrongly pass them).
    """
    return st.builds(
        lambda piece, extra: (
            (piece * (65_536 // len(piece.encode()) + 1))
            .encode()[: 65_536 + extra]
            .decode("utf-8", "ignore")
            + "x" * 4
        ),
        st.sampled_from(["a", "\xe9", "\u20ac", "\U0001f600", "a\u4e2d"]),
        st.integers(0, 4),
    ).filter(lambda s: len(s.encode()) > 65_535)


# --- 1. round trip -------------------------------------------------------------


class _RoundTripBase(SynchronousTestCase):
    """Shared assertions; the per-level subclasses are made by L{_round_trip_case}."""

    level: int

    def assertRoundTrip(self, packet: Packet, level: int) -> None:
        data = encode(packet, level)
        note(f"encoded: {data[:64].hex()}{'...' if len(data) > 64 else ''}")
        decoded = decode_all(data, level)
        self.assertEqual(decoded, [packet])
        self.assertIs(type(decoded[0]), type(packet))
        if isinstance(packet, Connect):
            # A server decoder learns the level from the CONNECT itself.
            decoder = Decoder()
            self.assertEqual(list(decoder.feed(data)), [packet])
            self.assertEqual(decoder.protocol_level, level)
            self.assertEqual(decoder.buffered, 0)


def _round_trip_test(packet_type: PacketType, level: int) -> Callable[..., None]:
    def test(self: _RoundTripBase, packet: Packet) -> None:
        self.assertRoundTrip(packet, level)

    name = f"test_{packet_type.name.lower()}"
    test.__name__ = name
    test.__qualname__ = f"RoundTripLevel{level}Tests.{name}"
    test.__doc__ = (
        f"{packet_type.name} packets survive encode and decode_all at protocol level {level}."
    )
    examples = 100 if packet_type in (PacketType.CONNECT, PacketType.PUBLISH) else 40
    fixed_form = packet_type in (PacketType.PINGREQ, PacketType.PINGRESP) or (
        level < 5 and packet_type == PacketType.DISCONNECT
    )
    if fixed_form:
        examples = 1
    return _budget(examples)(given(packet=S.packets_of_type(packet_type, level))(test))


def _round_trip_case(level: int) -> type[SynchronousTestCase]:
    namespace: dict[str, Any] = {
        "__doc__": f"Round trip of every packet type at protocol level {level}.",
        "__module__": __name__,
        "__qualname__": f"RoundTripLevel{level}Tests",
        "level": level,
    }
    for packet_type in S.packet_types(level):
        test = _round_trip_test(packet_type, level)
        namespace[test.__name__] = test
    return type(f"RoundTripLevel{level}Tests", (_RoundTripBase,), namespace)


RoundTripLevel3Tests = _round_trip_case(3)
RoundTripLevel4Tests = _round_trip_case(4)
RoundTripLevel5Tests = _round_trip_case(5)


# --- 2. chunking ---------------------------------------------------------------


class ChunkingTests(SynchronousTestCase):
    """Decoding does not depend on how the byte stream is cut into chunks."""

    def assertChunkingInvariant(self, level: int, known_level: bool, data: st.DataObject) -> None:
        packets = data.draw(S.packet_streams(level, connect_first=not known_level), label="packets")
        stream = _encode_all(packets, level)
        cuts = data.draw(_cuts(len(stream)), label="cuts")
        decoder_level = level if known_level else None

        whole = Decoder(protocol_level=decoder_level)
        self.assertEqual(list(whole.feed(stream)), packets)

        decoder = Decoder(protocol_level=decoder_level)
        decoded: list[Packet] = []
        for chunk in _split(stream, cuts):
            decoded.extend(decoder.feed(chunk))
        self.assertEqual(decoded, packets)
        self.assertEqual(decoder.buffered, 0)
        self.assertEqual(decoder.protocol_level, level if packets else decoder_level)

    @_budget(40)
    @given(level=st.sampled_from(S.LEVELS), data=st.data())
    def test_knownLevel(self, level: int, data: st.DataObject) -> None:
        """A client-side decoder (level given) is indifferent to chunk boundaries."""
        self.assertChunkingInvariant(level, True, data)

    @_budget(40)
    @given(level=st.sampled_from(S.LEVELS), data=st.data())
    def test_levelFromConnect(self, level: int, data: st.DataObject) -> None:
        """A server-side decoder (level from CONNECT) is indifferent to chunk boundaries."""
        self.assertChunkingInvariant(level, False, data)

    @_budget(30)
    @given(level=st.sampled_from(S.LEVELS), data=st.data())
    def test_stopIteratingEarly(self, level: int, data: st.DataObject) -> None:
        """Leaving a feed() generator after any packet loses and reorders nothing."""
        packets = data.draw(S.packet_streams(level, connect_first=False), label="packets")
        stream = _encode_all(packets, level)
        cuts = data.draw(_cuts(len(stream)), label="cuts")
        decoder = Decoder(protocol_level=level)
        decoded: list[Packet] = []
        for chunk in _split(stream, cuts) + [b""] * len(packets):
            feed = cast(Generator[Packet, None, None], decoder.feed(chunk))
            # Take at most one packet, then drop the generator.
            decoded.extend(p for _, p in zip(range(1), feed, strict=False))
            feed.close()
        self.assertEqual(decoded, packets)
        self.assertEqual(decoder.buffered, 0)


# --- 3. EncodedPublish ---------------------------------------------------------


class EncodedPublishTests(SynchronousTestCase):
    """L{EncodedPublish} gives the bytes C{encode} would give, receiver by receiver."""

    @_budget(80)
    @given(level=st.sampled_from(S.LEVELS), data=st.data())
    def test_forPacketIdEqualsEncode(self, level: int, data: st.DataObject) -> None:
        """for_packet_id(pid, dup) == encode(replace(publish, packet_id=pid, dup=dup))."""
        publish = data.draw(S.publishes(level), label="publish")
        encoded = EncodedPublish(publish, level)
        stamps: list[tuple[int | None, bool]]
        if publish.qos:
            stamps = data.draw(
                st.lists(st.tuples(S.packet_ids(), st.booleans()), min_size=1, max_size=4),
                label="stamps",
            )
        else:
            stamps = [(None, False)]
        for packet_id, dup in stamps:
            expected_packet = replace(publish, packet_id=packet_id, dup=dup)
            expected = encode(expected_packet, level)
            self.assertEqual(encoded.for_packet_id(packet_id, dup=dup), expected)
            self.assertEqual(b"".join(encoded.chunks(packet_id, dup)), expected)
            self.assertEqual(encoded.size, len(expected))
            self.assertEqual(decode_all(expected, level), [expected_packet])

    @_budget(30)
    @given(level=st.sampled_from(S.LEVELS), data=st.data())
    def test_refusesWhatEncodeRefuses(self, level: int, data: st.DataObject) -> None:
        """Packet ids 0, 65536 and None (QoS > 0), or any id or DUP on QoS 0, are refused."""
        publish = data.draw(S.publishes(level), label="publish")
        encoded = EncodedPublish(publish, level)
        if publish.qos:
            bad = data.draw(st.sampled_from([0, 65_536, None, -1]), label="packet_id")
            dup = data.draw(st.booleans(), label="dup")
        else:
            bad, dup = data.draw(
                st.sampled_from([(1, False), (65_535, False), (None, True)]), label="stamp"
            )
        with self.assertRaises(LocalProtocolError):
            encode(replace(publish, packet_id=bad, dup=dup), level)
        with self.assertRaises(LocalProtocolError):
            encoded.for_packet_id(bad, dup=dup)


# --- 4. robustness -------------------------------------------------------------


@st.composite
def _mutated(draw: st.DrawFn, stream: bytes) -> bytes:
    """C{stream} with one to four bytes flipped, set, inserted, deleted or cut off."""
    data = bytearray(stream)
    for _ in range(draw(st.integers(1, 4), label="mutations")):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "set" and at < len(data):
            data[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        else:
            del data[at:]
    return bytes(data)


class DecoderRobustnessTests(SynchronousTestCase):
    """Whatever the bytes, the decoder yields packets or raises RemoteProtocolError."""

    def assertOnlyRemoteErrors(
        self,
        stream: bytes,
        protocol_level: int | None,
        cuts: list[int] | None,
        max_packet_size: int = _LARGEST,
    ) -> None:
        """
        Feed C{stream} in chunks; fail on any exception but L{RemoteProtocolError},
        on an error without a reason code or message, on a buffer larger than
        C{max_packet_size}, and on a yielded packet that does not round-trip.
        """
        decoder = Decoder(max_packet_size=max_packet_size, protocol_level=protocol_level)
        yielded: list[tuple[Packet, int]] = []
        try:
            for chunk in _split(stream, cuts):
                for packet in decoder.feed(chunk):
                    level = (
                        packet.protocol_level
                        if isinstance(packet, Connect)
                        else decoder.protocol_level
                    )
                    yielded.append((packet, level))  # type: ignore[arg-type]
                self.assertLessEqual(decoder.buffered, max_packet_size)
        except RemoteProtocolError as error:
            self.assertIsInstance(error.reason_code, ReasonCode)
            self.assertIsInstance(error.message, str)
            self.assertTrue(error.message.strip(), "empty error message")
            self.assertLessEqual(decoder.buffered, max_packet_size)
            with self.assertRaises(RemoteProtocolError):
                list(decoder.feed(b"\xc0\x00"))
        except Exception:
            self.fail(f"the decoder raised something else:\n{traceback.format_exc()}")
        for packet, level in yielded:
            try:
                again = encode(packet, level)
            except Exception:
                self.fail(
                    f"decoded {packet!r} at level {level} but cannot encode it:\n"
                    f"{traceback.format_exc()}"
                )
            self.assertEqual(decode_all(again, level), [packet])

    @_budget(300)
    @given(
        level=st.sampled_from([None, *S.LEVELS]),
        prefix=st.one_of(st.just(b""), S.fixed_header_prefixes()),
        noise=st.binary(max_size=300),
        data=st.data(),
    )
    def test_randomBytes(
        self, level: int | None, prefix: bytes, noise: bytes, data: st.DataObject
    ) -> None:
        """Random byte streams: packets or RemoteProtocolError, whole or chunked."""
        stream = prefix + noise
        self.assertOnlyRemoteErrors(stream, level, [])
        self.assertOnlyRemoteErrors(stream, level, data.draw(_cuts(len(stream))))

    @_budget(60)
    @given(level=st.sampled_from(S.LEVELS), noise=st.binary(max_size=200), data=st.data())
    def test_randomBytesAfterConnect(self, level: int, noise: bytes, data: st.DataObject) -> None:
        """A valid CONNECT then noise, to a server-side decoder: only RemoteProtocolError."""
        connect = data.draw(S.connects(level), label="connect")
        stream = encode(connect, level) + noise
        self.assertOnlyRemoteErrors(stream, None, [])
        self.assertOnlyRemoteErrors(stream, None, data.draw(_cuts(len(stream))))

    @_budget(400)
    @given(level=st.sampled_from(S.LEVELS), known=st.booleans(), data=st.data())
    def test_mutatedStreams(self, level: int, known: bool, data: st.DataObject) -> None:
        """Valid streams with flipped/inserted/deleted/truncated bytes: only RemoteProtocolError."""
        packets = data.draw(
            S.packet_streams(level, connect_first=not known, max_size=4), label="packets"
        )
        stream = data.draw(_mutated(_encode_all(packets, level)), label="stream")
        protocol_level = level if known else None
        self.assertOnlyRemoteErrors(stream, protocol_level, [])
        self.assertOnlyRemoteErrors(stream, protocol_level, data.draw(_cuts(len(stream))))

    @_budget(100)
    @given(
        encoded_at=st.sampled_from(S.LEVELS),
        decoded_at=st.sampled_from(S.LEVELS),
        data=st.data(),
    )
    def test_otherLevelStreams(self, encoded_at: int, decoded_at: int, data: st.DataObject) -> None:
        """Streams encoded at one level and decoded at another: only RemoteProtocolError."""
        packets = data.draw(
            S.packet_streams(encoded_at, connect_first=False, max_size=4), label="packets"
        )
        stream = _encode_all(packets, encoded_at)
        self.assertOnlyRemoteErrors(stream, decoded_at, [])
        self.assertOnlyRemoteErrors(stream, decoded_at, data.draw(_cuts(len(stream))))

    @_budget(100)
    @given(
        level=st.sampled_from([None, *S.LEVELS]),
        max_packet_size=st.integers(2, 64),
        data=st.data(),
    )
    def test_smallMaximumBoundsTheBuffer(
        self, level: int | None, max_packet_size: int, data: st.DataObject
    ) -> None:
        """With a small max_packet_size, decoder.buffered never exceeds it after a feed."""
        if data.draw(st.booleans(), label="valid-ish"):
            packets = data.draw(
                S.packet_streams(level or 4, connect_first=level is None, max_size=4)
            )
            stream = data.draw(
                _mutated(_encode_all(packets, level or 4))
                | st.just(_encode_all(packets, level or 4))
            )
        else:
            stream = data.draw(S.fixed_header_prefixes()) + data.draw(st.binary(max_size=200))
        self.assertOnlyRemoteErrors(stream, level, data.draw(_cuts(len(stream))), max_packet_size)

    @_budget(100)
    @given(level=st.sampled_from(S.LEVELS), data=st.data())
    def test_connectErrorsCarryDeclaredLevel(self, level: int, data: st.DataObject) -> None:
        """A fault after a CONNECT's protocol level byte reports that level and CONNECT."""
        wire = bytearray(encode(data.draw(S.connects(level), label="connect"), level))
        header = 2
        while wire[header - 1] & 0x80:  # the remaining length's continuation bytes
            header += 1
        after_level = header + 2 + len(b"MQIsdp" if level == 3 else b"MQTT") + 1
        for _ in range(data.draw(st.integers(1, 3), label="changes")):
            at = data.draw(st.integers(after_level, len(wire) - 1), label="at")
            wire[at] ^= data.draw(st.integers(1, 255), label="xor")
        decoder = Decoder()
        try:
            decoded = list(decoder.feed(bytes(wire)))
        except RemoteProtocolError as error:
            self.assertEqual(error.protocol_level, level)
            self.assertEqual(error.packet_type, PacketType.CONNECT)
        else:
            # Either decoded (and then canonical) or waiting for more bytes.
            self.assertLessEqual(len(decoded), 1)
            for packet in decoded:
                self.assertEqual(decode_all(encode(packet, level), level), [packet])


# --- 5. packet size limits -----------------------------------------------------


def _header(first: int, remaining_length: int) -> bytes:
    return bytes([first]) + _varint(remaining_length)


class PacketSizeTests(SynchronousTestCase):
    """The decoder checks the size on the fixed header, before the body arrives."""

    def feedHeader(self, decoder: Decoder, header: bytes) -> int:
        """
        Feed C{header} one byte at a time (a L{RemoteProtocolError} propagates),
        checking the buffer bound after each byte; return the bytes fed.
        """
        for i in range(len(header)):
            list(decoder.feed(header[i : i + 1]))
            self.assertLessEqual(decoder.buffered, decoder.max_packet_size)
        return len(header)

    def test_hugeRemainingLengthRefusedOnHeader(self) -> None:
        """A header declaring 268,435,455 bytes is PACKET_TOO_LARGE at once with a small maximum."""
        for level, first in [(None, 0x10), (4, 0x30), (5, 0x30), (3, 0x82), (5, 0x20)]:
            decoder = Decoder(max_packet_size=1024, protocol_level=level)
            with self.assertRaises(RemoteProtocolError) as caught:
                self.feedHeader(decoder, _header(first, S.MAX_VARIABLE_BYTE_INTEGER))
            self.assertEqual(caught.exception.reason_code, ReasonCode.PACKET_TOO_LARGE)
            self.assertEqual(caught.exception.reason_code, 0x95)
            self.assertLessEqual(decoder.buffered, 1024)

    @_budget(150)
    @given(
        level=st.sampled_from([None, *S.LEVELS]),
        type_nibble=st.integers(1, 15),
        flags=st.integers(0, 15),
        remaining_length=st.integers(0, S.MAX_VARIABLE_BYTE_INTEGER),
        data=st.data(),
    )
    def test_sizeCheckedOnHeader(
        self,
        level: int | None,
        type_nibble: int,
        flags: int,
        remaining_length: int,
        data: st.DataObject,
    ) -> None:
        """A header is refused as too large iff 1 + len(length) + length > max_packet_size."""
        if level is None:
            type_nibble, flags = 1, 0
        header = _header((type_nibble << 4) | flags, remaining_length)
        total = len(header) + remaining_length
        too_small = total > 2 and data.draw(st.booleans(), label="too small")
        if too_small:
            maximum = data.draw(st.integers(2, total - 1), label="max_packet_size")
        else:
            maximum = data.draw(st.integers(total, _LARGEST), label="max_packet_size")
        decoder = Decoder(max_packet_size=maximum, protocol_level=level)
        if too_small:
            with self.assertRaises(RemoteProtocolError) as caught:
                self.feedHeader(decoder, header)
            self.assertEqual(caught.exception.reason_code, ReasonCode.PACKET_TOO_LARGE)
        elif remaining_length:
            # Header complete, body not sent: no error, only the header held.
            self.feedHeader(decoder, header)
            self.assertEqual(decoder.buffered, len(header))

    def test_partialLengthWithinTinyMaximum(self) -> None:
        """A partial remaining length is not held beyond a max_packet_size of 2 or 3."""
        for maximum, header in [(2, b"\x30\x80\x80"), (3, b"\x30\x80\x80\x80")]:
            decoder = Decoder(max_packet_size=maximum, protocol_level=4)
            try:
                self.feedHeader(decoder, header)
            except RemoteProtocolError as error:
                self.assertEqual(error.reason_code, ReasonCode.PACKET_TOO_LARGE)

    def test_largestRemainingLengthIsASize(self) -> None:
        """A header declaring 268,435,455 is accepted when max_packet_size allows it."""
        for level, first in [(None, 0x10), (3, 0x30), (4, 0x32), (5, 0x30), (5, 0x82)]:
            header = _header(first, S.MAX_VARIABLE_BYTE_INTEGER)
            self.assertEqual(header[1:], b"\xff\xff\xff\x7f")
            decoder = Decoder(max_packet_size=_LARGEST, protocol_level=level)
            self.feedHeader(decoder, header)
            self.assertEqual(decoder.buffered, 5)
            decoder = Decoder(protocol_level=level)  # the default maximum
            self.assertEqual(list(decoder.feed(header)), [])

    @_budget(60)
    @given(
        level=st.sampled_from([None, *S.LEVELS]),
        continued=st.lists(st.integers(0x80, 0xFF), min_size=4, max_size=4),
        last=st.integers(0, 0x7F),
    )
    def test_fiveByteRemainingLengthIsMalformed(
        self, level: int | None, continued: list[int], last: int
    ) -> None:
        """A remaining length with a fifth byte is MALFORMED_PACKET (0x81) by the fifth byte."""
        first = 0x10 if level is None else 0x30
        header = bytes([first, *continued, last])
        decoder = Decoder(max_packet_size=_LARGEST, protocol_level=level)
        with self.assertRaises(RemoteProtocolError) as caught:
            self.feedHeader(decoder, header)
        self.assertEqual(caught.exception.reason_code, ReasonCode.MALFORMED_PACKET)
        self.assertEqual(caught.exception.reason_code, 0x81)

    @_budget(40)
    @given(level=st.sampled_from(S.LEVELS), data=st.data())
    def test_packetOfExactlyMaximumSize(self, level: int, data: st.DataObject) -> None:
        """A packet of exactly max_packet_size bytes decodes; one byte less refuses it."""
        packet = data.draw(S.non_connect_packets(level), label="packet")
        wire = encode(packet, level)
        self.assertEqual(decode_all(wire, level, max_packet_size=len(wire)), [packet])
        if len(wire) - 1 < 2:
            return  # a maximum below 2 bytes is refused by Decoder() itself
        with self.assertRaises(RemoteProtocolError) as caught:
            decode_all(wire, level, max_packet_size=len(wire) - 1)
        self.assertEqual(caught.exception.reason_code, ReasonCode.PACKET_TOO_LARGE)


# --- 6. what the encoder refuses -----------------------------------------------


class EncoderRefusalTests(SynchronousTestCase):
    """encode raises LocalProtocolError for what MQTT cannot express."""

    def assertRefused(self, packet: Any, level: int) -> LocalProtocolError:
        try:
            data = encode(packet, level)
        except LocalProtocolError as error:
            self.assertIsInstance(error.reason_code, ReasonCode)
            self.assertTrue(error.message)
            return error
        except Exception:
            self.fail(f"encode raised something else:\n{traceback.format_exc()}")
        self.fail(f"encode({packet!r:.300}, {level}) gave {data[:40]!r}... instead of refusing")

    @_budget(40)
    @given(level=st.sampled_from(S.LEVELS), text=_too_long_strings(), data=st.data())
    def test_stringOver65535Bytes(self, level: int, text: str, data: st.DataObject) -> None:
        """Any UTF-8 field of more than 65,535 encoded bytes is refused."""
        where = data.draw(
            st.sampled_from(
                [
                    "client_id",
                    "username",
                    "will_topic",
                    "topic",
                    "filter",
                    "unsubscribe",
                    "user_property_name",
                    "user_property_value",
                    "reason_string",
                    "content_type",
                ]
            ),
            label="field",
        )
        if where in ("user_property_name", "user_property_value", "reason_string", "content_type"):
            level = 5
        packets = {
            "client_id": lambda: Connect(client_id=text, protocol_level=level),
            "username": lambda: Connect(username=text, protocol_level=level),
            "will_topic": lambda: Connect(will=Will(text), protocol_level=level),
            "topic": lambda: Publish(text),
            "filter": lambda: Subscribe(1, (Subscription(text),)),
            "unsubscribe": lambda: Unsubscribe(1, ("a", text)),
            "user_property_name": lambda: Puback(
                1, properties={PropertyId.USER_PROPERTY: [(text, "v")]}
            ),
            "user_property_value": lambda: Disconnect(
                properties={PropertyId.USER_PROPERTY: [("n", text)]}
            ),
            "reason_string": lambda: Suback(1, (0,), properties={PropertyId.REASON_STRING: text}),
            "content_type": lambda: Publish("t", properties={PropertyId.CONTENT_TYPE: text}),
        }
        self.assertRefused(packets[where](), level)

    def test_binaryOver65535Bytes(self) -> None:
        """Password, will payload and binary properties of 65,536 bytes are refused."""
        big = b"\x01" * 65_536
        for level in S.LEVELS:
            self.assertRefused(Connect(protocol_level=level, username="u", password=big), level)
            self.assertRefused(Connect(protocol_level=level, will=Will("t", big)), level)
        self.assertRefused(Publish("t", properties={PropertyId.CORRELATION_DATA: big}), 5)
        self.assertRefused(
            Auth(
                0x18, {PropertyId.AUTHENTICATION_DATA: big, PropertyId.AUTHENTICATION_METHOD: "m"}
            ),
            5,
        )

    @_budget(60)
    @given(
        level=st.sampled_from(S.LEVELS),
        bad=st.sampled_from([0, 65_536, -1, None]),
        data=st.data(),
    )
    def test_badPacketId(self, level: int, bad: int | None, data: st.DataObject) -> None:
        """Packet identifier 0 (or 65536, -1, None) is refused on every packet that has one."""
        kind = data.draw(
            st.sampled_from(
                [
                    PacketType.PUBLISH,
                    PacketType.PUBACK,
                    PacketType.PUBREC,
                    PacketType.PUBREL,
                    PacketType.PUBCOMP,
                    PacketType.SUBSCRIBE,
                    PacketType.SUBACK,
                    PacketType.UNSUBSCRIBE,
                    PacketType.UNSUBACK,
                ]
            ),
            label="type",
        )
        if kind == PacketType.PUBLISH:
            packet = data.draw(S.publishes(level, qos=data.draw(st.integers(1, 2))))
        else:
            packet = data.draw(S.packets_of_type(kind, level))
        self.assertRefused(replace(packet, packet_id=bad), level)

    @_budget(60)
    @given(level=st.sampled_from([3, 4]), data=st.data())
    def test_mqtt5FieldsBelowLevel5(self, level: int, data: st.DataObject) -> None:
        """A packet with MQTT 5 properties (or will properties) is refused at levels 3 and 4."""
        packet = data.draw(
            S.packets(5).filter(
                lambda p: (
                    bool(getattr(p, "properties", None))
                    or (isinstance(p, Connect) and p.will is not None and bool(p.will.properties))
                )
            ),
            label="packet",
        )
        if isinstance(packet, Connect):
            packet = replace(packet, protocol_level=level)
        self.assertRefused(packet, level)

    @_budget(40)
    @given(level=st.sampled_from([3, 4]), data=st.data())
    def test_mqtt5ReasonCodesBelowLevel5(self, level: int, data: st.DataObject) -> None:
        """Non-zero MQTT 5 reason codes, AUTH and MQTT 5 options are refused at levels 3 and 4."""
        kind = data.draw(
            st.sampled_from(
                [
                    Puback,
                    Pubrec,
                    Pubrel,
                    Pubcomp,
                    Disconnect,
                    Auth,
                    Unsuback,
                    Connack,
                    Suback,
                    Subscription,
                ]
            ),
            label="kind",
        )
        if kind in (Puback, Pubrec, Pubrel, Pubcomp):
            nonzero = sorted(c for c in ALLOWED_REASON_CODES[kind.packet_type] if c)
            code = data.draw(st.sampled_from(nonzero))
            packet: Any = kind(1, code)
        elif kind is Disconnect:
            packet = Disconnect(data.draw(st.sampled_from([0x04, 0x80, 0x8E])))
        elif kind is Auth:
            packet = Auth(data.draw(st.sampled_from([0x00, 0x18])))
        elif kind is Unsuback:
            packet = Unsuback(1, (0x00,))
        elif kind is Connack:
            packet = Connack(reason_code=data.draw(st.sampled_from([6, 0x80, 0x86, 0x87])))
        elif kind is Suback:
            packet = Suback(1, (data.draw(st.sampled_from([0x83, 0x87, 0x8F, 0xA1])),))
        else:
            option: dict[str, Any] = data.draw(
                st.sampled_from(
                    [{"no_local": True}, {"retain_as_published": True}, {"retain_handling": 1}]
                )
            )
            packet = Subscribe(1, (Subscription("a/b", **option),))
        self.assertRefused(packet, level)

    @_budget(40)
    @given(level=st.sampled_from(S.LEVELS), qos=st.sampled_from([3, 4, -1]), data=st.data())
    def test_badQoS(self, level: int, qos: int, data: st.DataObject) -> None:
        """QoS 3 (or any value outside 0-2) is refused in PUBLISH, Will and SUBSCRIBE."""
        where = data.draw(st.sampled_from(["publish", "will", "subscription"]))
        if where == "publish":
            packet: Any = replace(data.draw(S.publishes(level, qos=1)), qos=qos)
        elif where == "will":
            connect = data.draw(S.connects(level))
            packet = replace(connect, will=Will("w", qos=qos))
        else:
            packet = Subscribe(1, (Subscription("a/#", qos=qos),))
        self.assertRefused(packet, level)

    @_budget(40)
    @given(level=st.sampled_from(S.LEVELS), data=st.data())
    def test_invalidPublishTopic(self, level: int, data: st.DataObject) -> None:
        """PUBLISH topics with wildcards, or empty without a topic alias, are refused."""
        publish = data.draw(S.publishes(level), label="publish")
        props: Properties = {
            k: v for k, v in publish.properties.items() if k != PropertyId.TOPIC_ALIAS
        }
        topic = data.draw(
            st.sampled_from(["", "+", "#", "a/+", "a/#", "a+b", "sport/#/x"]), label="topic"
        )
        self.assertRefused(replace(publish, topic=topic, properties=props), level)

    def test_qos0WithPacketIdOrDup(self) -> None:
        """A QoS 0 PUBLISH with a packet identifier or the DUP flag is refused."""
        for level in S.LEVELS:
            self.assertRefused(Publish("t", packet_id=1), level)
            self.assertRefused(Publish("t", dup=True), level)

    def test_passwordWithoutUsername(self) -> None:
        """In 3.1 and 3.1.1 a password needs a user name; MQTT 5 allows it alone."""
        for level in (3, 4):
            self.assertRefused(Connect(protocol_level=level, password=b"p"), level)
        packet = Connect(protocol_level=5, password=b"p")
        self.assertEqual(decode_all(encode(packet, 5)), [packet])

    def test_emptyEntryLists(self) -> None:
        """SUBSCRIBE, UNSUBSCRIBE and SUBACK need at least one entry."""
        for level in S.LEVELS:
            self.assertRefused(Subscribe(1, ()), level)
            self.assertRefused(Unsubscribe(1, ()), level)
            self.assertRefused(Suback(1, ()), level)

    @_budget(40)
    @given(data=st.data())
    def test_propertyOutOfRange(self, data: st.DataObject) -> None:
        """Properties not allowed here, booleans of 2 and zeros where 0 is banned are refused."""
        packet = data.draw(
            st.sampled_from(
                [
                    Publish("t", properties={PropertyId.PAYLOAD_FORMAT_INDICATOR: 2}),
                    Publish("t", properties={PropertyId.TOPIC_ALIAS: 0}),
                    Publish("t", properties={PropertyId.SUBSCRIPTION_IDENTIFIER: [0]}),
                    Publish("t", properties={PropertyId.SESSION_EXPIRY_INTERVAL: 1}),
                    Subscribe(
                        1, (Subscription("a"),), {PropertyId.SUBSCRIPTION_IDENTIFIER: [1, 2]}
                    ),
                    Connack(properties={PropertyId.MAXIMUM_QOS: 2}),
                    Connack(properties={PropertyId.RECEIVE_MAXIMUM: 0}),
                    Connect(protocol_level=5, properties={PropertyId.MAXIMUM_PACKET_SIZE: 0}),
                    Connect(protocol_level=5, properties={PropertyId.WILL_DELAY_INTERVAL: 5}),
                    Puback(1, properties={PropertyId.CONTENT_TYPE: "x"}),
                    Publish("t", properties={PropertyId.MESSAGE_EXPIRY_INTERVAL: 2**32}),
                    Publish(
                        "t",
                        properties={
                            PropertyId.SUBSCRIPTION_IDENTIFIER: [S.MAX_VARIABLE_BYTE_INTEGER + 1]
                        },
                    ),
                ]
            )
        )
        self.assertRefused(packet, 5)

    @_budget(30)
    @given(level=st.sampled_from([3, 4, 5]))
    def test_connectLevelMismatch(self, level: int) -> None:
        """A CONNECT whose protocol_level differs from the encoder's level is refused."""
        for other in S.LEVELS:
            if other != level:
                self.assertRefused(Connect(protocol_level=other), level)
