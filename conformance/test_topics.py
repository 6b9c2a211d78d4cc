"""
Section 4.7 (Topic Names and Topic Filters), from the wire: how C{#} and C{+} match,
topics beginning with C{$}, case and empty levels (no normalization), and the topic
names and filters a server must refuse.

As in L{conformance.test_subscribe}, absence is proved by a marker message published
last, never by waiting.
"""

from __future__ import annotations

import pytest

from conformance.test_subscribe import (
    FAILURE,
    MARKER,
    Client,
    Peer,
    clearing_retained,
    client_id,
    raw_packet,
    raw_subscribe,
    refused_or_closed,
    topic,
    utf8,
)
from conformance.wire import ClosedError
from mqttbroker.codec import Disconnect, Puback, Suback, Subscribe, Subscription


def matching(
    connect_client: Client,
    level: int,
    name: str,
    filters: list[str],
    topics: list[str],
) -> list[str]:
    """
    Subscribe to C{filters} (and a marker topic), publish once to each of C{topics}
    from another client, and return the topics of the messages received before the
    marker, in arrival order, only counting those in C{topics}.
    """
    sub = Peer.connect(connect_client, level, client_id(name, level))
    marker = topic(name, level, "marker")
    sub.subscribe_ok(*filters, marker)
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    for t in topics:
        pub.publish(t, t.encode(), 1)
    pub.publish(marker, MARKER, 1)
    received = sub.until_marker(marker)
    assert all(p.payload == p.topic.encode() for p in received)
    return [p.topic for p in received if p.topic in topics]


@pytest.mark.mqtt311("MQTT-4.7.1-2")
@pytest.mark.mqtt5("MQTT-4.7.1-1")
def test_multi_level_wildcard_matching(connect_client: Client, level: int) -> None:
    """C{#} matches its parent level and any number of levels below it."""
    name = "match-hash"

    def t(*rest: str) -> str:
        return topic(name, level, *rest)

    filters = [t("sport", "tennis", "player1", "#")]
    matched = [
        t("sport", "tennis", "player1"),
        t("sport", "tennis", "player1", "ranking"),
        t("sport", "tennis", "player1", "score", "wimbledon"),
        t("sport", "tennis", "player1", ""),
    ]
    unmatched = [
        t("sport", "tennis", "player2"),
        t("sport", "tennis"),
        t("sport", "tennis", "player10"),
    ]
    assert matching(connect_client, level, name, filters, matched + unmatched) == matched


@pytest.mark.mqtt311("MQTT-4.7.1-2")
@pytest.mark.mqtt5("MQTT-4.7.1-1")
def test_multi_level_wildcard_alone_under_a_prefix(connect_client: Client, level: int) -> None:
    """C{prefix/#} matches C{prefix} itself and everything under it, not its siblings."""
    name = "match-hash-parent"
    base = topic(name, level, "sport")
    matched = [base, base + "/", base + "/a", base + "/a/b/c", base + "//"]
    unmatched = [base + "s", topic(name, level, "sports", "a")]
    assert matching(connect_client, level, name, [base + "/#"], matched + unmatched) == matched


@pytest.mark.mqtt311("MQTT-4.7.1-3")
@pytest.mark.mqtt5("MQTT-4.7.1-2")
def test_single_level_wildcard_matching(connect_client: Client, level: int) -> None:
    """C{+} matches exactly one level, an empty one included."""
    name = "match-plus"

    def t(*rest: str) -> str:
        return topic(name, level, *rest)

    filters = [t("sport", "tennis", "+"), t("+", "x", "+", "y")]
    matched = [
        t("sport", "tennis", "player1"),
        t("sport", "tennis", ""),
        t("a", "x", "b", "y"),
        t("", "x", "", "y"),
    ]
    unmatched = [
        t("sport", "tennis", "player1", "ranking"),
        t("sport", "tennis"),
        t("a", "x", "y"),
        t("a", "x", "b", "c", "y"),
        t("a", "b", "x", "c", "y"),
    ]
    assert matching(connect_client, level, name, filters, matched + unmatched) == matched


@pytest.mark.mqtt311("MQTT-4.7.1-2", "MQTT-4.7.1-3")
@pytest.mark.mqtt5("MQTT-4.7.1-1", "MQTT-4.7.1-2")
def test_wildcards_combined(connect_client: Client, level: int) -> None:
    """C{+} and C{#} together in one filter."""
    name = "match-combined"

    def t(*rest: str) -> str:
        return topic(name, level, *rest)

    filters = [t("+", "tennis", "#")]
    matched = [t("sport", "tennis"), t("sport", "tennis", "player1"), t("", "tennis", "a", "b")]
    unmatched = [t("sport"), t("sport", "golf", "tennis"), t("tennis")]
    assert matching(connect_client, level, name, filters, matched + unmatched) == matched


@pytest.mark.mqtt311("MQTT-4.7.2-1")
@pytest.mark.mqtt5("MQTT-4.7.2-1")
def test_wildcards_do_not_match_dollar_topics(connect_client: Client, level: int) -> None:
    """
    Filters beginning with a wildcard do not match topics beginning with C{$}, live
    or retained; filters beginning with the C{$} level do, and a C{$} further down a
    topic is an ordinary character.
    """
    name = "dollar"
    dollar = f"$conformance-{name}-v{level}"
    live, retained = dollar + "/live", dollar + "/retained"
    inner = topic(name, level, "$inner")
    marker = topic(name, level, "marker")
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    with clearing_retained(connect_client, level, retained):
        pub.publish(retained, b"retained", 1, retain=True)
        wild = Peer.connect(connect_client, level, client_id(name, level, "wild"))
        wild.subscribe_ok("#", "+/live", "+/+", "+/retained")
        explicit = Peer.connect(connect_client, level, client_id(name, level, "explicit"))
        explicit.subscribe_ok(dollar + "/#", topic(name, level, "+"))
        for t in (live, inner):
            pub.publish(t, t.encode(), 1)
        pub.publish(marker, MARKER, 1)
        ours = {live, retained, inner}
        got = [p.topic for p in explicit.until_marker(marker) if p.topic in ours]
        assert sorted(got) == sorted(ours), "control: the explicit filters receive all three"
        got = [p.topic for p in wild.until_marker(marker) if p.topic in ours]
        assert got == [inner]


@pytest.mark.mqtt311("MQTT-4.7.3-4")
@pytest.mark.mqtt5("MQTT-4.7.3-4")
def test_topics_are_not_normalized(connect_client: Client, level: int) -> None:
    """
    Matching is exact: case differs, a leading, trailing or doubled C{/} makes a
    different topic, spaces count, and Unicode is not normalized.
    """
    name = "no-normalization"
    base = topic(name, level)
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    filters = [base + "/Case", base + "/a/b", base + "/sp ace", base + "/" + composed]
    matched = [base + "/Case", base + "/a/b", base + "/sp ace", base + "/" + composed]
    unmatched = [
        base + "/case",
        base + "/CASE",
        base + "/a//b",
        base + "/a/b/",
        base + "//a/b",
        base + "/space",
        base + "/sp  ace",
        base + "/" + decomposed,
    ]
    assert matching(connect_client, level, name, filters, matched + unmatched) == matched


def _assert_filter_refused(connect_client: Client, level: int, name: str, encoded: bytes) -> None:
    """A SUBSCRIBE with this (already encoded) filter gets a failure code or a close."""
    wire = connect_client(level)
    wire.connect(client_id(name, level, encoded.hex()))
    wire.send_bytes(raw_subscribe(level, 1, [(encoded, 1)]))
    suback = refused_or_closed(wire)
    if suback is not None:
        assert suback.packet_id == 1
        assert suback.reason_codes[0] >= FAILURE


@pytest.mark.mqtt311("MQTT-4.7.1-2")
@pytest.mark.mqtt5("MQTT-4.7.1-1")
@pytest.mark.parametrize("template", ["{p}/#/a", "{p}/a#", "{p}#", "{p}/#/#", "#/{p}", "{p}/##"])
def test_misplaced_multi_level_wildcard_refused(
    connect_client: Client, level: int, template: str
) -> None:
    """C{#} that is not alone in the last level makes the filter invalid."""
    encoded = utf8(template.format(p=topic("bad-hash", level)))
    _assert_filter_refused(connect_client, level, "bad-hash", encoded)


@pytest.mark.mqtt311("MQTT-4.7.1-3")
@pytest.mark.mqtt5("MQTT-4.7.1-2")
@pytest.mark.parametrize("template", ["{p}/a+", "{p}/+a/b", "{p}+", "+{p}", "{p}/++"])
def test_partial_single_level_wildcard_refused(
    connect_client: Client, level: int, template: str
) -> None:
    """C{+} that does not fill a whole level makes the filter invalid."""
    encoded = utf8(template.format(p=topic("bad-plus", level)))
    _assert_filter_refused(connect_client, level, "bad-plus", encoded)


@pytest.mark.mqtt311("MQTT-4.7.3-1")
@pytest.mark.mqtt5("MQTT-4.7.3-1")
def test_empty_topic_filter_refused(connect_client: Client, level: int) -> None:
    """A zero-length Topic Filter is invalid."""
    _assert_filter_refused(connect_client, level, "empty-filter", b"\x00\x00")


@pytest.mark.mqtt311("MQTT-4.7.3-2")
@pytest.mark.mqtt5("MQTT-4.7.3-2")
def test_topic_filter_with_null_refused(connect_client: Client, level: int) -> None:
    """A Topic Filter containing U+0000 is refused."""
    raw = topic("null-filter", level).encode() + b"/a\x00b"
    _assert_filter_refused(connect_client, level, "null-filter", len(raw).to_bytes(2, "big") + raw)


@pytest.mark.mqtt311("MQTT-4.7.1-2", "MQTT-4.7.1-3", "MQTT-4.7.3-1")
@pytest.mark.mqtt5("MQTT-4.7.1-1", "MQTT-4.7.1-2", "MQTT-4.7.3-1")
def test_valid_filters_accepted(connect_client: Client, level: int) -> None:
    """Wildcards in their allowed places, and C{/} alone, make valid filters."""
    name = "valid-filters"
    p = topic(name, level)
    filters = ["#", "+", "/", "+/+", "/+", "+/#", p + "/#", p + "/+", p + "/+/#", p + "/+/+/x"]
    wire = connect_client(level)
    wire.connect(client_id(name, level))
    wire.send(Subscribe(5, tuple(Subscription(f, 0) for f in filters)))
    # Subscribing to "#" may bring retained messages left by other clients first.
    _, suback = wire.receive_until(Suback)
    assert suback.packet_id == 5
    assert all(code < FAILURE for code in suback.reason_codes), suback.reason_codes
    wire.send(Disconnect())


def _raw_publish(level: int, topic_bytes: bytes, qos: int, packet_id: int = 1) -> bytes:
    """A PUBLISH with a raw topic field (the codec refuses to encode these)."""
    body = topic_bytes + (packet_id.to_bytes(2, "big") if qos else b"")
    body += (b"\x00" if level == 5 else b"") + b"payload"
    return raw_packet(0x30 | (qos << 1), body)


def _assert_publish_refused(
    connect_client: Client, level: int, name: str, topic_bytes: bytes
) -> None:
    """
    A QoS 1 PUBLISH whose Topic Name is invalid: the server closes the connection
    (in 5.0 it may instead answer PUBACK with an error code), and a subscriber to
    everything under the test's prefix receives nothing of it.
    """
    sub = Peer.connect(connect_client, level, client_id(name, level))
    everything, marker = topic(name, level, "#"), topic(name, level, "marker")
    sub.subscribe_ok(everything)
    wire = connect_client(level)
    wire.connect(client_id(name, level, "pub"))
    wire.send_bytes(_raw_publish(level, topic_bytes, 1, packet_id=3))
    try:
        answer = wire.receive()
    except ClosedError:
        answer = None
    if isinstance(answer, Puback) and level == 5:
        assert answer.packet_id == 3
        assert answer.reason_code >= FAILURE
    else:
        wire.expect_closed_for_error(first=answer)
    sub.publish(marker, MARKER, 1)
    assert sub.until_marker(marker) == []


@pytest.mark.mqtt311("MQTT-4.7.1-1", "MQTT-3.3.2-2")
@pytest.mark.mqtt5("MQTT-4.7.0-1", "MQTT-3.3.2-2")
@pytest.mark.parametrize("wildcard", ["+", "#", "a+", "a#"])
def test_wildcard_in_topic_name_refused(connect_client: Client, level: int, wildcard: str) -> None:
    """A Topic Name may not contain a wildcard character."""
    name = "wildcard-name"
    encoded = utf8(topic(name, level, wildcard))
    _assert_publish_refused(connect_client, level, name, encoded)


@pytest.mark.mqtt311("MQTT-4.7.3-1")
@pytest.mark.mqtt5("MQTT-4.7.3-1")
def test_empty_topic_name_refused(connect_client: Client, level: int) -> None:
    """A zero-length Topic Name (in 5.0: without a Topic Alias) is refused."""
    _assert_publish_refused(connect_client, level, "empty-name", b"\x00\x00")


@pytest.mark.mqtt311("MQTT-4.7.3-2")
@pytest.mark.mqtt5("MQTT-4.7.3-2")
def test_topic_name_with_null_refused(connect_client: Client, level: int) -> None:
    """A Topic Name containing U+0000 is refused."""
    name = "null-name"
    raw = topic(name, level).encode() + b"/a\x00b"
    _assert_publish_refused(connect_client, level, name, len(raw).to_bytes(2, "big") + raw)
