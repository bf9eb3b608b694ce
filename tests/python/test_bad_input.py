"""Bad input over raw apache.rocketmq.v2 gRPC: every rejection carries the right Status code and
writes nothing (the leader's Raft log does not grow, the topic's messages do not change)."""
import os
import socket
import time
from datetime import datetime, timezone

import pytest

import rmq_grpc as rg

pb = rg.pb
Code = rg.Code
QUEUES = 8
MAX_BODY = 4 * 1024 * 1024  # the server's default --max-body-bytes


@pytest.fixture(scope="module")
def seeded(cluster):
    """A topic holding a few messages, so that "nothing changed" is checked against real content."""
    topic = cluster.create_topic(queues=QUEUES)
    before = cluster.leader_last_log_index()
    response = rg.send(cluster.addresses[0], [rg.message(topic, f"seed-{i}".encode()) for i in range(3)])
    assert response.status.code == Code.OK, response
    # The measure used below is meaningful: an accepted send does grow the leader's log.
    assert cluster.leader_last_log_index() > before
    return topic


def snapshot(cluster, topic):
    """(leader's last_log_index, every message of the topic as bytes)."""
    messages = sorted(m.SerializeToString(deterministic=True) for m in rg.pull_all(cluster.addresses[0], topic, QUEUES))
    return cluster.leader_last_log_index(), messages


def assert_rejected(cluster, topic, call, expected_code, nodes=None):
    """Run `call(addr)` against each node (leader and followers); each must answer `expected_code`
    with no OK entry, and nothing may be written."""
    before_index, before_messages = snapshot(cluster, topic)
    for addr in nodes or cluster.addresses:
        response = call(addr)
        assert response.status.code == expected_code, (
            f"via {addr}: expected {Code.Name(expected_code)} ({expected_code}), got "
            f"{Code.Name(response.status.code) if response.status.code in Code.values() else '?'} "
            f"({response.status.code}): {response.status.message!r}"
        )
        assert response.status.message, f"via {addr}: a rejection should say why"
        for entry in getattr(response, "entries", []):
            assert entry.status.code != Code.OK, f"via {addr}: rejected request has an OK entry: {response}"
    after_index, after_messages = snapshot(cluster, topic)
    assert after_index == before_index, f"the leader's log grew from {before_index} to {after_index}"
    assert after_messages == before_messages, "the topic's messages changed"


def send_one(topic, body=b"payload", md=None, **kwargs):
    return lambda addr: rg.send(addr, [rg.message(topic, body, **kwargs)], md=md)


def test_unknown_topic_is_topic_not_found(cluster, seeded):
    """Sending to a topic that was never created answers TOPIC_NOT_FOUND and writes nothing."""
    assert_rejected(cluster, seeded, send_one("never-created-topic"), Code.TOPIC_NOT_FOUND)


@pytest.mark.parametrize("name", ["a b", "x" * 200, "a/b", "t\u00e9"], ids=["space", "200-chars", "slash", "non-ascii"])
def test_illegal_topic_name_is_illegal_topic(cluster, seeded, name):
    """Sending to a topic whose name breaks ^[%a-zA-Z0-9_-]+$ or the 127-char limit answers ILLEGAL_TOPIC and writes nothing."""
    assert_rejected(cluster, seeded, send_one(name), Code.ILLEGAL_TOPIC)


@pytest.mark.parametrize("name", ["a b", "x" * 200])
def test_illegal_topic_name_in_query_route_is_illegal_topic(cluster, name):
    """QueryRoute for an illegal topic name answers ILLEGAL_TOPIC with no queues."""
    for addr in cluster.addresses:
        response = rg.query_route(addr, name)
        assert response.status.code == Code.ILLEGAL_TOPIC, response.status
        assert len(response.message_queues) == 0


def test_query_route_of_unknown_topic_is_topic_not_found(cluster):
    """QueryRoute for a topic that does not exist answers TOPIC_NOT_FOUND."""
    for addr in cluster.addresses:
        response = rg.query_route(addr, "never-created-topic")
        assert response.status.code == Code.TOPIC_NOT_FOUND, response.status


def test_empty_body_is_message_body_empty(cluster, seeded):
    """A message with an empty body answers MESSAGE_BODY_EMPTY and writes nothing."""
    assert_rejected(cluster, seeded, send_one(seeded, body=b""), Code.MESSAGE_BODY_EMPTY)


def test_body_over_limit_is_message_body_too_large(cluster, seeded):
    """A body one byte over 4 MiB answers MESSAGE_BODY_TOO_LARGE and writes nothing."""
    body = os.urandom(MAX_BODY + 1)
    assert_rejected(cluster, seeded, send_one(seeded, body=body), Code.MESSAGE_BODY_TOO_LARGE)


def test_body_at_limit_is_accepted(cluster):
    """A body of exactly 4 MiB is accepted and reads back intact (the limit is inclusive)."""
    topic = cluster.create_topic(queues=1)
    body = os.urandom(MAX_BODY)
    response = rg.send(cluster.addresses[1], [rg.message(topic, body)])
    assert response.status.code == Code.OK, response.status
    status, messages, _ = rg.pull(cluster.addresses[2], topic, 0)
    assert status.code == Code.OK, status
    assert len(messages) == 1 and messages[0].body == body


@pytest.mark.parametrize("client_id", [None, "", "   "], ids=["missing", "empty", "blank"])
def test_missing_client_id_is_client_id_required(cluster, seeded, client_id):
    """A SendMessage without a usable x-mq-client-id header answers CLIENT_ID_REQUIRED and writes nothing."""
    md = rg.metadata(client_id=client_id)
    assert_rejected(cluster, seeded, send_one(seeded, md=md), Code.CLIENT_ID_REQUIRED)


def test_missing_client_id_on_query_route_is_client_id_required(cluster, seeded):
    """QueryRoute without x-mq-client-id answers CLIENT_ID_REQUIRED."""
    for addr in cluster.addresses:
        response = rg.query_route(addr, seeded, md=rg.metadata(client_id=None))
        assert response.status.code == Code.CLIENT_ID_REQUIRED, response.status


@pytest.mark.parametrize(
    "bad,expected",
    [
        ({"body": b""}, Code.MESSAGE_BODY_EMPTY),
        ({"tag": "a|b"}, Code.ILLEGAL_MESSAGE_TAG),
        ({"body": b"x" * (MAX_BODY + 1)}, Code.MESSAGE_BODY_TOO_LARGE),
    ],
    ids=["empty-body", "illegal-tag", "too-large"],
)
@pytest.mark.parametrize("position", [0, 2, 4], ids=["first", "middle", "last"])
def test_batch_with_one_bad_message_is_rejected_whole(cluster, seeded, bad, expected, position):
    """A batch of five where one message is bad is rejected as a whole with that message's code, and none of the good ones is written."""
    def call(addr):
        messages = []
        for i in range(5):
            kwargs = {"body": f"good-{i}".encode()}
            if i == position:
                kwargs.update(bad)
            body = kwargs.pop("body")
            messages.append(rg.message(seeded, body, **kwargs))
        return rg.send(addr, messages)

    assert_rejected(cluster, seeded, call, expected)


def test_batch_with_mixed_topics_is_rejected_whole(cluster, seeded):
    """A batch whose messages name different topics is rejected (BAD_REQUEST) and writes nothing."""
    other = cluster.create_topic(queues=1)

    def call(addr):
        return rg.send(addr, [rg.message(seeded, b"one"), rg.message(other, b"two")])

    assert_rejected(cluster, seeded, call, Code.BAD_REQUEST)
    assert rg.pull_all(cluster.addresses[0], other, 1) == []


@pytest.mark.parametrize("unit", ["ms", "s"])
def test_absurd_delivery_time_is_illegal_delivery_time(cluster, seeded, unit):
    """A delivery timestamp in the year 3000 (whether the client put seconds or milliseconds in the Timestamp) answers ILLEGAL_DELIVERY_TIME and writes nothing."""
    year_3000_ms = int(datetime(3000, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)

    def call(addr):
        m = rg.message(seeded, b"later")
        if unit == "ms":
            m.system_properties.delivery_timestamp.CopyFrom(rg.timestamp_ms(year_3000_ms))
        else:
            # The Python 5.1.2 client writes the user's value into Timestamp.seconds; a
            # millisecond value there means a time far beyond the year 3000.
            m.system_properties.delivery_timestamp.seconds = year_3000_ms
        return rg.send(addr, [m])

    assert_rejected(cluster, seeded, call, Code.ILLEGAL_DELIVERY_TIME)


@pytest.mark.parametrize("tag", ["a|b", "|", "   "], ids=["pipe", "only-pipe", "blank"])
def test_illegal_tag_is_illegal_message_tag(cluster, seeded, tag):
    """A tag containing '|' or only blanks answers ILLEGAL_MESSAGE_TAG (40004) and writes nothing."""
    assert_rejected(cluster, seeded, send_one(seeded, tag=tag), Code.ILLEGAL_MESSAGE_TAG)


def other_bad_message(kind, topic):
    m = rg.message(topic, b"payload")
    sp = m.system_properties
    if kind == "blank-key":
        del sp.keys[:]
        sp.keys.extend(["ok", "  "])
    elif kind == "long-tag":
        sp.tag = "t" * 1025
    elif kind == "empty-property-key":
        m.user_properties[""] = "v"
    elif kind == "huge-properties":
        m.user_properties["big"] = "v" * (16 * 1024 + 1)
    elif kind == "normal-with-group":
        sp.message_group = "g"
    elif kind == "fifo-without-group":
        sp.message_type = pb.MessageType.FIFO
    return m


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("blank-key", Code.ILLEGAL_MESSAGE_KEY),
        ("long-tag", Code.ILLEGAL_MESSAGE_TAG),
        ("empty-property-key", Code.ILLEGAL_MESSAGE_PROPERTY_KEY),
        ("huge-properties", Code.MESSAGE_PROPERTIES_TOO_LARGE),
        ("normal-with-group", Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE),
        ("fifo-without-group", Code.ILLEGAL_MESSAGE_GROUP),
    ],
)
def test_other_bad_message_fields_are_rejected(cluster, seeded, kind, expected):
    """Blank keys, over-long tags, empty or oversized user properties and message-type/group conflicts are rejected with their specific codes and write nothing."""
    assert_rejected(cluster, seeded, lambda addr: rg.send(addr, [other_bad_message(kind, seeded)]), expected)


def test_empty_request_and_oversized_batch_are_bad_requests(cluster, seeded):
    """A SendMessage with no messages, or with more than 1024 messages, answers BAD_REQUEST and writes nothing."""
    assert_rejected(cluster, seeded, lambda addr: rg.send(addr, []), Code.BAD_REQUEST)
    many = [rg.message(seeded, b"m") for _ in range(1025)]
    assert_rejected(cluster, seeded, lambda addr: rg.send(addr, many), Code.BAD_REQUEST)


@pytest.mark.parametrize(
    "case,expected",
    [
        ("unknown-topic", Code.TOPIC_NOT_FOUND),
        ("illegal-topic", Code.ILLEGAL_TOPIC),
        ("queue-out-of-range", Code.BAD_REQUEST),
        ("negative-queue", Code.BAD_REQUEST),
        ("negative-offset", Code.ILLEGAL_OFFSET),
        ("offset-past-end", Code.ILLEGAL_OFFSET),
        ("no-client-id", Code.CLIENT_ID_REQUIRED),
    ],
)
def test_bad_pull_requests_are_rejected(cluster, seeded, case, expected):
    """PullMessage with a bad topic, queue, offset or missing client id answers one status frame with the specific code and no messages."""
    topic, queue_id, offset, md = seeded, 0, 0, None
    if case == "unknown-topic":
        topic = "never-created-topic"
    elif case == "illegal-topic":
        topic = "a b"
    elif case == "queue-out-of-range":
        queue_id = QUEUES
    elif case == "negative-queue":
        queue_id = -1
    elif case == "negative-offset":
        offset = -1
    elif case == "offset-past-end":
        offset = 1_000_000
    elif case == "no-client-id":
        md = rg.metadata(client_id=None)
    for addr in cluster.addresses:
        status, messages, _ = rg.pull(addr, topic, queue_id, offset=offset, md=md)
        assert status is not None, f"via {addr}: no status frame"
        assert status.code == expected, f"via {addr}: {status}"
        assert messages == []


def test_garbage_on_client_port_does_not_crash_the_server(cluster, seeded):
    """Garbage bytes written to every node's client port (raw socket) leave the node running and answering QueryRoute."""
    payloads = [
        b"\x00" * 64,
        os.urandom(64 * 1024),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        # A valid HTTP/2 preface followed by a frame header claiming a huge frame, then junk.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01" + os.urandom(4096),
        # A valid preface and SETTINGS, then a HEADERS frame with an undecodable HPACK block.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        + b"\x00\x00\x10\x01\x05\x00\x00\x00\x01" + b"\xff" * 16,
    ]
    for addr in cluster.addresses:
        host, port = addr.rsplit(":", 1)
        for payload in payloads:
            with socket.create_connection((host, int(port)), timeout=5) as s:
                try:
                    s.sendall(payload)
                    s.settimeout(1)
                    s.recv(4096)
                except OSError:
                    pass  # the server may close or reset the connection: fine
        # A connection that sends half a preface and hangs up.
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"PRI * HTTP/2.0\r\n")
    time.sleep(0.2)
    cluster.check_alive()
    for addr in cluster.addresses:
        response = rg.query_route(addr, seeded)
        assert response.status.code == Code.OK, response.status
        assert len(response.message_queues) == QUEUES


@pytest.mark.parametrize(
    "payload",
    [b"\xff" * 64, b"\x0a\xff\xff\xff\xff\x0f", os.urandom(1024)],
    ids=["ff-bytes", "truncated-length", "random"],
)
def test_undecodable_protobuf_is_a_grpc_error_not_a_crash(cluster, seeded, payload):
    """A SendMessage whose request bytes are not a valid protobuf fails with a gRPC error (or a non-OK status), writes nothing, and every node keeps serving."""
    import grpc

    def call(addr):
        method = rg.channel(addr).unary_unary(
            "/apache.rocketmq.v2.MessagingService/SendMessage",
            request_serializer=lambda b: b,
            response_deserializer=rg.svc.SendMessageResponse.FromString,
        )
        try:
            response = method(payload, metadata=rg.metadata(), timeout=rg.RPC_TIMEOUT_S)
        except grpc.RpcError as e:
            assert e.code() != grpc.StatusCode.OK
            return None
        return response

    before = snapshot(cluster, seeded)
    for addr in cluster.addresses:
        response = call(addr)
        if response is not None:
            assert response.status.code != Code.OK, f"via {addr}: garbage was accepted: {response}"
    assert snapshot(cluster, seeded) == before
    cluster.check_alive()
    for addr in cluster.addresses:
        assert rg.query_route(addr, seeded).status.code == Code.OK


def test_oversized_grpc_message_is_refused_not_a_crash(cluster, seeded):
    """A gRPC request far beyond the server's largest decodable message (24 MiB body) is refused, writes nothing, and the node keeps serving."""
    import grpc

    before = snapshot(cluster, seeded)
    body = b"z" * (24 * 1024 * 1024)
    for addr in cluster.addresses:
        try:
            response = rg.send(addr, [rg.message(seeded, body)])
        except grpc.RpcError as e:
            assert e.code() != grpc.StatusCode.OK
        else:
            assert response.status.code != Code.OK, f"via {addr}: 24 MiB body accepted"
    assert snapshot(cluster, seeded) == before
    cluster.check_alive()
    for addr in cluster.addresses:
        assert rg.query_route(addr, seeded).status.code == Code.OK


def test_query_route_of_existing_topic(cluster, seeded):
    """QueryRoute of an existing topic, from any node, lists every queue with broker id 0, READ_WRITE, IPv4 endpoints holding all three client addresses, and NORMAL among the accepted types."""
    expected_addresses = sorted(cluster.addresses)
    for addr in cluster.addresses:
        response = rg.query_route(addr, seeded)
        assert response.status.code == Code.OK, response.status
        assert sorted(q.id for q in response.message_queues) == list(range(QUEUES))
        for q in response.message_queues:
            assert q.topic.name == seeded
            assert q.broker.id == 0, q
            assert q.broker.name, q
            assert q.permission == pb.Permission.READ_WRITE, q
            assert q.broker.endpoints.scheme == pb.AddressScheme.IPv4, q
            assert len(q.broker.endpoints.addresses) == 3, q
            got = sorted(f"{a.host}:{a.port}" for a in q.broker.endpoints.addresses)
            assert got == expected_addresses, q
            assert pb.MessageType.NORMAL in q.accept_message_types, q
