"""The official rocketmq-python-client PushConsumer against a three-node group: it consumes
everything (QueryAssignment, long-polled receives, acks), a message whose listener fails comes back
with its delivery attempt counted up, and nothing acked comes back."""
import threading
import time
from collections import Counter

from rocketmq import ClientConfiguration, ConsumeResult, Credentials, FilterExpression, MessageListener, PushConsumer

from test_producer import make_message, make_producer, send_all
from test_simple_consumer import unique_group

MESSAGES = 100
DEADLINE_S = 60


class Recorder(MessageListener):
    """Records every delivery; fails the first delivery of the messages in `fail_once`."""

    def __init__(self, fail_once=()):
        self.lock = threading.Lock()
        self.deliveries = []
        self.fail_once = set(fail_once)

    def consume(self, message):
        with self.lock:
            self.deliveries.append((message.message_id, message.delivery_attempt, message.body))
            if message.body in self.fail_once:
                self.fail_once.discard(message.body)
                return ConsumeResult.FAILURE
        return ConsumeResult.SUCCESS


def test_push_consumer_consumes_everything_and_retries_a_failure(cluster):
    topic = cluster.create_topic(queues=4)
    producer = make_producer(cluster.endpoints, topic)
    receipts = send_all(producer, [make_message(topic, f"p{i}".encode(), tag="push") for i in range(MESSAGES)])
    producer.shutdown()
    sent = {r.message_id for r in receipts}
    listener = Recorder(fail_once={b"p7"})
    cfg = ClientConfiguration(cluster.endpoints, Credentials("", ""), namespace="", request_timeout=10)
    consumer = PushConsumer(cfg, unique_group("push"), listener, {topic: FilterExpression("push")}, tls_enable=False)
    consumer.startup()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            with listener.lock:
                succeeded = {m for m, _, body in listener.deliveries} if not listener.fail_once else set()
            if succeeded >= sent and any(body == b"p7" and attempt == 2 for _, attempt, body in listener.deliveries):
                break
            time.sleep(0.2)
        # Room for a wrong redelivery of an acked message to show up.
        time.sleep(3)
    finally:
        consumer.shutdown()
    delivered = Counter(m for m, _, _ in listener.deliveries)
    assert set(delivered) == sent, f"missing {len(sent - set(delivered))} of {MESSAGES}"
    retried = [(attempt, body) for _, attempt, body in listener.deliveries if body == b"p7"]
    assert retried == [(1, b"p7"), (2, b"p7")], f"the failed message's deliveries: {retried}"
    again = {m: n for m, n in delivered.items() if n > 1 and m != receipts[7].message_id}
    assert not again, f"acked messages delivered again: {again}"
