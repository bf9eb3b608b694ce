"""The official rocketmq-python-client SimpleConsumer (pop consumption) against a three-node group:
round trips, redelivery after the invisible duration, ChangeInvisibleDuration, tag filters, and
two consumers of one group splitting the messages."""
import threading
import time
import uuid

from rocketmq import ClientConfiguration, Credentials, FilterExpression, SimpleConsumer

import rmq_grpc as rg
from test_producer import make_message, make_producer, send_all

# Seconds the consumer's long poll waits for messages (the client's await_duration).
AWAIT_S = 3


def make_consumer(endpoints, group, topic, expression="*"):
    cfg = ClientConfiguration(endpoints, Credentials("", ""), namespace="", request_timeout=10)
    consumer = SimpleConsumer(cfg, group, {topic: FilterExpression(expression)}, await_duration=AWAIT_S, tls_enable=False)
    consumer.startup()
    return consumer


def unique_group(prefix="g"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def receive_until(consumer, want, invisible_s=15, ack=True, deadline_s=40):
    """Receive (and ack) until `want` messages arrived or the deadline passes."""
    got = []
    deadline = time.monotonic() + deadline_s
    while len(got) < want and time.monotonic() < deadline:
        for m in consumer.receive(16, invisible_s):
            got.append(m)
            if ack:
                consumer.ack(m)
    return got


def test_round_trip_keeps_every_field(cluster):
    topic = cluster.create_topic(queues=4)
    producer = make_producer(cluster.endpoints, topic)
    sent = [
        make_message(topic, f"body-{i}".encode(), tag=f"tag{i % 2}", keys=(f"k{i}", f"alt{i}"), properties={"n": str(i)})
        for i in range(20)
    ]
    before_ms = int(time.time() * 1000)
    receipts = send_all(producer, sent)
    producer.shutdown()
    consumer = make_consumer(cluster.endpoints, unique_group(), topic)
    try:
        got = receive_until(consumer, 20)
    finally:
        consumer.shutdown()
    assert len(got) == 20, f"received {len(got)} of 20"
    by_id = {m.message_id: m for m in got}
    assert len(by_id) == 20, "a message was delivered twice"
    for i, receipt in enumerate(receipts):
        m = by_id[receipt.message_id]
        assert m.body == f"body-{i}".encode()
        assert m.tag == f"tag{i % 2}"
        assert sorted(m.keys) == sorted([f"k{i}", f"alt{i}"])
        assert m.properties.get("n") == str(i)
        assert m.delivery_attempt == 1
        assert m.topic == topic
        assert m.born_timestamp >= before_ms - 60_000
        assert m.receipt_handle
        store_ms = m._Message__store_timestamp  # the client keeps it but has no accessor
        assert m.born_timestamp <= store_ms <= int(time.time() * 1000) + 1000
    # The client hides queue and offset; a raw receive in another group shows them: each is where
    # the send receipt said, and every queue's offsets are dense.
    _, raw = rg.receive(cluster.addresses[0], topic, unique_group(), batch_size=32)
    assert len(raw) == 20
    sent_at = {r.message_id: r.offset for r in receipts}
    per_queue = {}
    for m in raw:
        props = m.system_properties
        assert props.queue_offset == sent_at[props.message_id]
        per_queue.setdefault(props.queue_id, []).append(props.queue_offset)
    for queue, offsets in per_queue.items():
        assert sorted(offsets) == list(range(len(offsets))), f"queue {queue} offsets {offsets}"


def one_message_topic(cluster, body):
    """A new one-queue topic holding one message, and a consumer of a new group on it."""
    topic = cluster.create_topic(queues=1)
    producer = make_producer(cluster.endpoints, topic)
    send_all(producer, [make_message(topic, body)])
    producer.shutdown()
    return topic, make_consumer(cluster.endpoints, unique_group(), topic)


def test_unacked_message_comes_back_after_invisible_duration(cluster):
    _, consumer = one_message_topic(cluster, b"again")
    try:
        first = receive_until(consumer, 1, invisible_s=2, ack=False)
        assert [m.delivery_attempt for m in first] == [1]
        second = receive_until(consumer, 1, invisible_s=30, ack=False)
        assert len(second) == 1 and second[0].message_id == first[0].message_id
        assert second[0].delivery_attempt == 2
        assert second[0].receipt_handle != first[0].receipt_handle
        # The first delivery's handle is stale now; the current one acks.
        try:
            consumer.ack(first[0])
            raise AssertionError("an ack with a superseded receipt handle succeeded")
        except Exception as e:  # the client raises BadRequestException for INVALID_RECEIPT_HANDLE
            assert "40013" in str(e) or "INVALID_RECEIPT_HANDLE" in str(e) or "receipt" in str(e).lower(), e
        consumer.ack(second[0])
        time.sleep(2.5)
        assert receive_until(consumer, 1, deadline_s=AWAIT_S + 2) == [], "an acked message was delivered again"
    finally:
        consumer.shutdown()


def test_change_invisible_duration_extends_it(cluster):
    _, consumer = one_message_topic(cluster, b"slow")
    try:
        [m] = receive_until(consumer, 1, invisible_s=2, ack=False)
        old_handle = m.receipt_handle
        consumer.change_invisible_duration(m, 30)
        assert m.receipt_handle != old_handle, "ChangeInvisibleDuration returned no new handle"
        time.sleep(3)
        assert receive_until(consumer, 1, invisible_s=2, ack=False, deadline_s=AWAIT_S + 2) == [], "the extension did not hold"
        consumer.ack(m)
    finally:
        consumer.shutdown()


def test_tag_filters_select_exactly_matching_messages(cluster):
    topic = cluster.create_topic(queues=2)
    producer = make_producer(cluster.endpoints, topic)
    tags = ["a", "b", "c"]
    receipts = send_all(producer, [make_message(topic, f"m{i}".encode(), tag=tags[i % 3]) for i in range(30)])
    producer.shutdown()
    expected = {r.message_id for i, r in enumerate(receipts) if tags[i % 3] in ("a", "c")}
    consumer = make_consumer(cluster.endpoints, unique_group(), topic, "a || c")
    try:
        got = receive_until(consumer, len(expected))
        # Nothing else may follow.
        got += receive_until(consumer, 1, deadline_s=AWAIT_S + 1)
    finally:
        consumer.shutdown()
    assert sorted(m.message_id for m in got) == sorted(expected)
    assert {m.tag for m in got} == {"a", "c"}


def test_two_consumers_in_one_group_split_the_messages(cluster):
    topic = cluster.create_topic(queues=4)
    group = unique_group()
    producer = make_producer(cluster.endpoints, topic)
    receipts = send_all(producer, [make_message(topic, f"s{i}".encode()) for i in range(200)])
    producer.shutdown()
    consumers = [make_consumer(cluster.endpoints, group, topic) for _ in range(2)]
    results = [[], []]
    done = threading.Event()

    def run(i):
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            for m in consumers[i].receive(8, 30):
                results[i].append(m.message_id)
                consumers[i].ack(m)
            if sum(len(r) for r in results) >= 200:
                done.set()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in consumers:
        c.shutdown()
    all_ids = results[0] + results[1]
    assert sorted(all_ids) == sorted(r.message_id for r in receipts), "missing or duplicated deliveries"
    assert not set(results[0]) & set(results[1]), "a message went to both consumers"
    assert results[0] and results[1], f"one consumer got nothing: {len(results[0])} / {len(results[1])}"


def test_long_poll_wakes_when_a_message_is_applied_and_honours_batch_size(cluster):
    """A receive that is already waiting returns the message sent meanwhile (a receive that did not
    wake would end empty at its long-poll deadline), and never more than its batch size."""
    topic = cluster.create_topic(queues=2)
    group = unique_group("poll")
    result = {}

    def waiting_receive():
        result["frames"] = rg.receive(cluster.addresses[1], topic, group, batch_size=3, wait_ms=20_000)

    waiter = threading.Thread(target=waiting_receive)
    waiter.start()
    time.sleep(1.0)
    assert rg.send(cluster.addresses[0], [rg.message(topic, b"wake-up")]).status.code == rg.Code.OK
    waiter.join(timeout=30)
    status, messages = result["frames"]
    assert status.code == rg.Code.OK and [m.body for m in messages] == [b"wake-up"], (status, messages)
    assert rg.send(cluster.addresses[0], [rg.message(topic, f"b{i}".encode()) for i in range(10)]).status.code == rg.Code.OK
    sizes = []
    while sum(sizes) < 10:
        _, messages = rg.receive(cluster.addresses[0], topic, group, batch_size=3, wait_ms=2000)
        assert messages, "messages are waiting but the receive came back empty"
        sizes.append(len(messages))
    assert max(sizes) <= 3 and sum(sizes) == 10, sizes


def test_receipt_handle_stays_valid_across_a_leader_change(cluster):
    topic = cluster.create_topic(queues=1)
    group = unique_group("handover")
    assert rg.send(cluster.addresses[0], [rg.message(topic, b"handed-over")]).status.code == rg.Code.OK
    _, [message] = rg.receive(cluster.addresses[0], topic, group, invisible_ms=60_000)
    leader_id, target = cluster.transfer_leader()
    handle = (message.system_properties.message_id, message.system_properties.receipt_handle)
    response = rg.ack(cluster.addresses[leader_id - 1], topic, group, [handle])
    assert response.status.code == rg.Code.OK, response
    # Acked under the old leader's handle, on the new leader: it is not handed out again.
    status, messages = rg.receive(cluster.addresses[target - 1], topic, group, wait_ms=1000)
    assert messages == [] and status.code == rg.Code.MESSAGE_NOT_FOUND
