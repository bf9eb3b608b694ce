"""Dead-letter queues: a message handed out more often than the group's max delivery attempts, or
one a consumer forwards (ForwardMessageToDeadLetterQueue, as the PushConsumer does when it gives
up), moves to the group's %DLQ%<group> topic and is not handed out to the group again."""
import time

import rmq_grpc as rg
from test_simple_consumer import unique_group

Code = rg.Code


def dead_letters(cluster, group):
    """Messages of the group's dead-letter topic (one queue)."""
    status, messages, _ = rg.pull(cluster.addresses[0], f"%DLQ%{group}", 0)
    assert status.code in (Code.OK, Code.MESSAGE_NOT_FOUND), status
    return messages


def test_message_past_max_attempts_moves_to_the_dead_letter_topic(cluster):
    topic = cluster.create_topic(queues=1)
    assert rg.send(cluster.addresses[0], [rg.message(topic, b"poison", properties={"p": "1"})]).status.code == Code.OK
    group = unique_group("dlq")
    cluster.cli("group", "create", "--endpoint", cluster.addresses[0], "--group", group, "--max-delivery-attempts", "2")
    attempts = []
    for _ in range(2):
        _, messages = rg.receive(cluster.addresses[1], topic, group, invisible_ms=1000, wait_ms=3000)
        attempts += [m.system_properties.delivery_attempt for m in messages]
        time.sleep(1.1)
    assert attempts == [1, 2]
    # The third hand-out exceeds the limit: the leader moves it instead of delivering it.
    status, messages = rg.receive(cluster.addresses[2], topic, group, invisible_ms=1000, wait_ms=2000)
    assert (status.code, messages) == (Code.MESSAGE_NOT_FOUND, []), (status, messages)
    [dead] = dead_letters(cluster, group)
    assert dead.body == b"poison"
    assert dead.user_properties["p"] == "1" and dead.user_properties["ORIGIN_TOPIC"] == topic
    time.sleep(1.1)
    status, messages = rg.receive(cluster.addresses[0], topic, group, invisible_ms=1000, wait_ms=1500)
    assert messages == [], "a dead-lettered message was handed out again"


def test_forwarded_message_moves_to_the_dead_letter_topic(cluster):
    topic = cluster.create_topic(queues=1)
    assert rg.send(cluster.addresses[0], [rg.message(topic, b"give-up")]).status.code == Code.OK
    group = unique_group("fwd")
    _, [message] = rg.receive(cluster.addresses[0], topic, group, invisible_ms=1000)
    request = rg.svc.ForwardMessageToDeadLetterQueueRequest(
        receipt_handle=message.system_properties.receipt_handle,
        message_id=message.system_properties.message_id,
        delivery_attempt=1,
        max_delivery_attempts=1,
    )
    request.group.name = group
    request.topic.name = topic
    response = rg.stub(cluster.addresses[1]).ForwardMessageToDeadLetterQueue(request, metadata=rg.metadata(), timeout=rg.RPC_TIMEOUT_S)
    assert response.status.code == Code.OK, response
    assert [m.body for m in dead_letters(cluster, group)] == [b"give-up"]
    time.sleep(1.1)
    _, messages = rg.receive(cluster.addresses[0], topic, group, invisible_ms=1000, wait_ms=1500)
    assert messages == [], "a forwarded message was handed out again"
    # Its handle is spent: forwarding again is refused and adds nothing.
    again = rg.stub(cluster.addresses[0]).ForwardMessageToDeadLetterQueue(request, metadata=rg.metadata(), timeout=rg.RPC_TIMEOUT_S)
    assert again.status.code == Code.INVALID_RECEIPT_HANDLE, again
    assert len(dead_letters(cluster, group)) == 1
