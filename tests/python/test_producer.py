"""The official rocketmq-python-client Producer against a three-node raftmq group."""
import time
from collections import defaultdict

import pytest
from rocketmq import ClientConfiguration, Credentials, Message, Producer

import rmq_grpc as rg
from conftest import crc32_hex

pb = rg.pb
Code = rg.Code
QUEUES = 8


def make_producer(endpoints, topic):
    cfg = ClientConfiguration(endpoints, Credentials("", ""), namespace="", request_timeout=10)
    producer = Producer(cfg, topics=(topic,), tls_enable=False)
    producer.startup()
    return producer


def make_message(topic, body, tag=None, keys=(), properties=None):
    m = Message()
    m.topic = topic
    m.body = body
    if tag is not None:
        m.tag = tag
    if keys:
        # The `keys` property setter takes *keys, which plain assignment cannot pass more than one of.
        Message.keys.fset(m, *keys)
    for k, v in (properties or {}).items():
        m.add_property(k, v)
    return m


def send_all(producer, messages):
    receipts = []
    for m in messages:
        receipt = producer.send(m)
        assert receipt.message_id, f"no message id in the receipt for {m}"
        receipts.append(receipt)
    return receipts


def wait_replicated(cluster, timeout=15):
    """Wait until every node has applied everything the leader has committed."""
    target = cluster.leader()[1]["committed"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = cluster.status()
        if all(n["applied"] >= target for n in nodes.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"nodes did not apply index {target} within {timeout}s: {cluster.status()}")


def assert_dense_offsets(records):
    """Queue offsets of every queue are exactly 0..n-1."""
    per_queue = defaultdict(list)
    for r in records:
        per_queue[r["queue_id"]].append(r["queue_offset"])
    for queue_id, offsets in per_queue.items():
        assert sorted(offsets) == list(range(len(offsets))), f"queue {queue_id} offsets are not dense from 0: {sorted(offsets)}"


def endpoint_cases():
    return ["all-joined", "node-1", "node-2", "node-3"]


@pytest.mark.parametrize("which", endpoint_cases())
def test_official_producer_sends_and_messages_read_back(cluster, which):
    """The official Producer, pointed at all three addresses (';'-joined) or a single node, gets a receipt with a message id for every send, and `raftmq consume` reads back exactly those bodies, keys, tags and ids at dense per-queue offsets."""
    topic = cluster.create_topic(queues=QUEUES)
    endpoints = cluster.endpoints if which == "all-joined" else cluster.addresses[int(which[-1]) - 1]
    count = 20
    sent = [
        make_message(topic, f"body-{which}-{i}".encode(), tag=f"tag{i % 3}", keys=(f"key-{i}",))
        for i in range(count)
    ]
    producer = make_producer(endpoints, topic)
    try:
        receipts = send_all(producer, sent)
    finally:
        producer.shutdown()

    ids = [r.message_id for r in receipts]
    assert len(set(ids)) == count, f"message ids are not unique: {ids}"
    records = cluster.consume(topic)
    assert len(records) == count, f"expected {count} messages, read {len(records)}: {records}"
    by_id = {r["message_id"]: r for r in records}
    assert set(by_id) == set(ids)
    for i, (m, receipt) in enumerate(zip(sent, receipts)):
        r = by_id[receipt.message_id]
        assert r["body"] == m.body.decode()
        assert r["tag"] == f"tag{i % 3}"
        assert r["keys"] == [f"key-{i}"]
        # The receipt's offset is the queue offset the message landed at. (Its queue is the one the
        # client picked for routing; SendMessage carries no queue id, the server picks the queue.)
        assert r["queue_offset"] == receipt.offset, (r, receipt.offset)
    assert_dense_offsets(records)
    # Round robin: 20 messages over 8 queues use every queue.
    assert {r["queue_id"] for r in records} == set(range(QUEUES))


def test_properties_keys_and_tag_round_trip_through_pull(cluster):
    """User properties, several keys and the tag sent by the official Producer come back through raw PullMessage with complete, correct system properties."""
    topic = cluster.create_topic(queues=2)
    props = {"order": "42", "region": "eu-west", "empty-ish": "x", "unicode": "h\u00e9llo"}
    bodies = [b"first payload", b"\x00\x01binary\xff\xfe body", b"third"]
    t0_ms = int(time.time() * 1000)
    producer = make_producer(cluster.endpoints, topic)
    try:
        receipts = []
        for i, body in enumerate(bodies):
            m = make_message(topic, body, tag=f"created-{i}", keys=(f"order-{i}", f"customer-{i}"),
                             properties={**props, "index": str(i)})
            receipts.append(producer.send(m))
    finally:
        producer.shutdown()
    t1_ms = int(time.time() * 1000)

    for node in cluster.addresses:
        pulled = {m.system_properties.message_id: m for m in rg.pull_all(node, topic, 2)}
        assert set(pulled) == {r.message_id for r in receipts}, f"via {node}"
        for i, (body, receipt) in enumerate(zip(bodies, receipts)):
            m = pulled[receipt.message_id]
            sp = m.system_properties
            assert m.topic.name == topic
            assert m.body == body
            assert dict(m.user_properties) == {**props, "index": str(i)}
            assert sp.message_id == receipt.message_id
            assert sp.tag == f"created-{i}"
            assert sorted(sp.keys) == sorted([f"order-{i}", f"customer-{i}"])
            assert sp.message_type == pb.MessageType.NORMAL
            assert sp.body_encoding == pb.Encoding.IDENTITY
            assert sp.body_digest.type == pb.DigestType.CRC32
            assert sp.body_digest.checksum == crc32_hex(body)
            assert sp.HasField("queue_offset")
            assert sp.queue_offset == receipt.offset
            assert 0 <= sp.queue_id < 2
            assert sp.HasField("born_timestamp") and sp.HasField("store_timestamp")
            born = sp.born_timestamp.ToMilliseconds()
            stored = sp.store_timestamp.ToMilliseconds()
            # The Python client sends born_timestamp in whole seconds.
            assert t0_ms - 1000 <= born <= t1_ms, (born, t0_ms, t1_ms)
            assert t0_ms - 1000 <= stored <= t1_ms + 1000, (stored, t0_ms, t1_ms)
            assert born <= stored + 1000
            assert sp.store_host
            # The official client's own decoding accepts it: digest verifies, properties survive.
            decoded = Message().fromProtobuf(m)
            assert not decoded.corrupted
            assert decoded.body == body
            assert decoded.tag == f"created-{i}"
            assert decoded.keys == {f"order-{i}", f"customer-{i}"}
            assert decoded.properties == {**props, "index": str(i)}
            assert decoded.message_id == receipt.message_id


def test_batch_send_returns_one_entry_per_message_with_consecutive_offsets(cluster):
    """Several messages in one raw SendMessageRequest get one OK entry each, echoing their ids, with consecutive offsets in one queue, and later batches continue after them."""
    topic = cluster.create_topic(queues=1)
    offset = 0
    all_ids = []
    for batch_no, size in enumerate([5, 3, 1, 7]):
        messages = [rg.message(topic, f"b{batch_no}-{i}".encode(), tag="batch", keys=(f"b{batch_no}",)) for i in range(size)]
        ids = [m.system_properties.message_id for m in messages]
        # Alternate the node that receives the batch: followers forward to the leader.
        response = rg.send(cluster.addresses[batch_no % 3], messages)
        assert response.status.code == Code.OK, response
        assert len(response.entries) == size, response
        for i, entry in enumerate(response.entries):
            assert entry.status.code == Code.OK, entry
            assert entry.message_id == ids[i]
            assert entry.offset == offset + i, f"batch {batch_no}: {[e.offset for e in response.entries]}"
        offset += size
        all_ids.extend(ids)

    status, pulled, next_offset = rg.pull(cluster.addresses[0], topic, 0, offset=0, batch_size=100)
    assert status.code == Code.OK, status
    assert [m.system_properties.message_id for m in pulled] == all_ids
    assert [m.system_properties.queue_offset for m in pulled] == list(range(offset))
    assert next_offset == offset
    for addr in cluster.addresses:
        begin = rg.query_offset(addr, topic, 0, rg.pb.QueryOffsetPolicy.BEGINNING)
        end = rg.query_offset(addr, topic, 0, rg.pb.QueryOffsetPolicy.END)
        assert (begin.status.code, begin.offset) == (Code.OK, 0), begin
        assert (end.status.code, end.offset) == (Code.OK, offset), end


def test_batch_across_queues_lands_in_one_queue(cluster):
    """A batch on a multi-queue topic is stored contiguously in a single queue, in request order."""
    topic = cluster.create_topic(queues=4)
    messages = [rg.message(topic, f"m{i}".encode()) for i in range(6)]
    response = rg.send(cluster.addresses[1], messages)
    assert response.status.code == Code.OK, response
    pulled = rg.pull_all(cluster.addresses[2], topic, 4)
    assert [m.system_properties.message_id for m in pulled] == [m.system_properties.message_id for m in messages]
    assert len({m.system_properties.queue_id for m in pulled}) == 1
    assert [m.system_properties.queue_offset for m in pulled] == [e.offset for e in response.entries]


def test_every_node_reads_the_same_messages_locally(cluster):
    """After sends through the official Producer, each node's own `--local` read returns the same messages as the others and as were sent (replication)."""
    topic = cluster.create_topic(queues=QUEUES)
    producer = make_producer(cluster.endpoints, topic)
    try:
        receipts = send_all(producer, [make_message(topic, f"rep-{i}".encode(), tag="rep", keys=(f"r{i}",)) for i in range(30)])
    finally:
        producer.shutdown()
    wait_replicated(cluster)

    key = lambda r: (r["queue_id"], r["queue_offset"])
    reads = {addr: sorted(cluster.consume(topic, endpoint=addr, local=True), key=key) for addr in cluster.addresses}
    first = reads[cluster.addresses[0]]
    assert {r["message_id"] for r in first} == {r.message_id for r in receipts}
    assert len(first) == len(receipts)
    for addr, records in reads.items():
        assert records == first, f"{addr}'s local read differs from {cluster.addresses[0]}'s"
    assert_dense_offsets(first)
    # And the leader-routed read agrees with the local ones.
    assert sorted(cluster.consume(topic), key=key) == first
