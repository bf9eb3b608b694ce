"""Bad input to the consumer calls over raw apache.rocketmq.v2 gRPC: malformed, foreign and stale
receipt handles, unknown groups, absurd invisible durations, illegal filters. Each gets its v2 code
from every node and writes nothing (the leader's Raft log does not grow)."""
import pytest

import rmq_grpc as rg
from test_bad_input import assert_rejected

Code = rg.Code
QUEUES = 8  # assert_rejected (test_bad_input) reads back 8 queues


class Receive:
    """Adapts a receive's (status, messages) to the response shape assert_rejected reads."""

    def __init__(self, status, messages):
        self.status = status
        assert not messages, f"a rejected receive handed out {len(messages)} messages"


@pytest.fixture(scope="module")
def pending(cluster):
    """A topic with messages, a group that received one of them (in flight), and its handle."""
    topic = cluster.create_topic(queues=QUEUES)
    response = rg.send(cluster.addresses[0], [rg.message(topic, f"m-{i}".encode()) for i in range(4)])
    assert response.status.code == Code.OK, response
    group = f"bad-input-{topic}"
    status, messages = rg.receive(cluster.addresses[0], topic, group, batch_size=1, invisible_ms=600_000)
    assert status.code == Code.OK and len(messages) == 1, (status, messages)
    return topic, group, messages[0]


def handle_of(message):
    return message.system_properties.message_id, message.system_properties.receipt_handle


@pytest.mark.parametrize(
    "handle",
    ["", "garbage", "rq1" + "0" * 64, "rq1" + "zz" * 32, "x" * 100_000],
    ids=["empty", "garbage", "all-zero", "not-hex", "huge"],
)
def test_malformed_receipt_handle_is_invalid(cluster, pending, handle):
    topic, group, message = pending
    message_id = message.system_properties.message_id
    assert_rejected(cluster, topic, lambda a: rg.ack(a, topic, group, [(message_id, handle)]), Code.INVALID_RECEIPT_HANDLE)
    assert_rejected(cluster, topic, lambda a: rg.change_invisible(a, topic, group, message_id, handle, 10_000), Code.INVALID_RECEIPT_HANDLE)


def test_foreign_receipt_handles_are_invalid(cluster, pending):
    """A real handle presented for another group or another topic is not that group's."""
    topic, group, message = pending
    other_topic = cluster.create_topic(queues=QUEUES)
    other_group = f"{group}-other"
    # Make the other group exist, so that the refusal is about the handle, not the group.
    status, _ = rg.receive(cluster.addresses[0], topic, other_group, batch_size=1, invisible_ms=600_000)
    assert status.code == Code.OK, status
    assert_rejected(cluster, topic, lambda a: rg.ack(a, topic, other_group, [handle_of(message)]), Code.INVALID_RECEIPT_HANDLE)
    assert_rejected(cluster, topic, lambda a: rg.ack(a, other_topic, group, [handle_of(message)]), Code.INVALID_RECEIPT_HANDLE)


def test_unknown_group_is_consumer_group_not_found(cluster, pending):
    topic, _, message = pending
    group = "never-created-group"
    assert_rejected(cluster, topic, lambda a: rg.ack(a, topic, group, [handle_of(message)]), Code.CONSUMER_GROUP_NOT_FOUND)
    assert_rejected(cluster, topic, lambda a: rg.change_invisible(a, topic, group, *handle_of(message), 10_000), Code.CONSUMER_GROUP_NOT_FOUND)
    assert_rejected(cluster, topic, lambda a: rg.get_offset(a, topic, group, 0), Code.CONSUMER_GROUP_NOT_FOUND)


@pytest.mark.parametrize("invisible_ms", [-1000, 0, 13 * 3600 * 1000], ids=["negative", "zero", "13h"])
def test_absurd_invisible_duration_on_receive(cluster, pending, invisible_ms):
    topic, group, _ = pending
    if invisible_ms < 0:
        call = lambda a: Receive(*_receive_raw_negative(a, topic, group))  # noqa: E731
    else:
        call = lambda a: Receive(*rg.receive(a, topic, group, invisible_ms=invisible_ms))  # noqa: E731
    assert_rejected(cluster, topic, call, Code.ILLEGAL_INVISIBLE_TIME)


def _receive_raw_negative(addr, topic, group):
    """A receive whose invisible duration is negative (seconds=-1 on the wire)."""
    request = rg.svc.ReceiveMessageRequest(batch_size=1)
    request.group.name = group
    request.message_queue.topic.name = topic
    request.message_queue.id = -1
    request.invisible_duration.seconds = -1
    status, messages = None, []
    for frame in rg.stub(addr).ReceiveMessage(request, metadata=rg.metadata(), timeout=rg.RPC_TIMEOUT_S):
        if frame.WhichOneof("content") == "status":
            status = frame.status
        elif frame.WhichOneof("content") == "message":
            messages.append(frame.message)
    return status, messages


@pytest.mark.parametrize("invisible_ms", [-1000, 13 * 3600 * 1000], ids=["negative", "13h"])
def test_absurd_invisible_duration_on_change(cluster, pending, invisible_ms):
    topic, group, message = pending
    call = lambda a: rg.change_invisible(a, topic, group, *handle_of(message), invisible_ms)  # noqa: E731
    assert_rejected(cluster, topic, call, Code.ILLEGAL_INVISIBLE_TIME)


@pytest.mark.parametrize("expression", ["a ||", "|| b", "a || * "])
def test_illegal_filter_expression(cluster, pending, expression):
    topic, group, _ = pending
    call = lambda a: Receive(*rg.receive(a, topic, group, expression=expression))  # noqa: E731
    assert_rejected(cluster, topic, call, Code.ILLEGAL_FILTER_EXPRESSION)


@pytest.mark.parametrize("batch_size", [0, -1, 100_000])
def test_batch_size_out_of_range(cluster, pending, batch_size):
    topic, group, _ = pending
    call = lambda a: Receive(*rg.receive(a, topic, group, batch_size=batch_size))  # noqa: E731
    assert_rejected(cluster, topic, call, Code.BAD_REQUEST)


def test_illegal_group_name(cluster, pending):
    topic, _, message = pending
    call = lambda a: Receive(*rg.receive(a, topic, "bad group!"))  # noqa: E731
    assert_rejected(cluster, topic, call, Code.ILLEGAL_CONSUMER_GROUP)
    assert_rejected(cluster, topic, lambda a: rg.ack(a, topic, "bad group!", [handle_of(message)]), Code.ILLEGAL_CONSUMER_GROUP)


def test_the_pending_handle_still_works_after_all_that(cluster, pending):
    """None of the refusals above touched the in-flight delivery: its handle acks."""
    topic, group, message = pending
    response = rg.ack(cluster.addresses[1], topic, group, [handle_of(message)])
    assert response.status.code == Code.OK, response
    # A second ack of the same delivery holds (it was acked), and the message is not handed out again.
    assert rg.ack(cluster.addresses[2], topic, group, [handle_of(message)]).status.code == Code.OK
    ids = set()
    for _ in range(3):
        _, messages = rg.receive(cluster.addresses[0], topic, group, batch_size=32, invisible_ms=600_000)
        ids |= {m.system_properties.message_id for m in messages}
    assert message.system_properties.message_id not in ids
    assert len(ids) == 3, "the three other messages are handed out once each"
