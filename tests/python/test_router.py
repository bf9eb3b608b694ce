"""The official Python Producer with a router as its only endpoint reaches both groups behind it."""
import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from conftest import Cluster, Router, START_TIMEOUT_S, unique_topic
from test_producer import make_message, make_producer
from test_simple_consumer import make_consumer, receive_until, unique_group

QUEUES = 2


@pytest.fixture(scope="module")
def routed():
    """A router and two three-node groups (g1, g2) registered with it."""
    root = Path(tempfile.mkdtemp(prefix="raftmq-pytest-router-"))
    router = Router(root / "router")
    groups = [Cluster(root / g, group=g, extra_args=("--routers", router.addr)) for g in ("g1", "g2")]
    try:
        for g in groups:
            g.start()
        for g in groups:
            g.wait_settled()
        wait_router_nodes(groups[0], router, 6)
        yield router, groups
    finally:
        for g in groups:
            g.stop()
        router.stop()
        shutil.rmtree(root, ignore_errors=True)


def wait_router_nodes(cli_owner, router, count, timeout=START_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while True:
        out = cli_owner.cli("cluster", "status", "--endpoint", router.addr, "--json", check=False)
        nodes = json.loads(out.stdout)["nodes"] if out.returncode == 0 else []
        if len(nodes) == count:
            return nodes
        assert time.monotonic() < deadline, f"router knows {nodes}, not {count} nodes\n{router.tail()}"
        time.sleep(0.2)


def messages_in_group(group, topic):
    """How many messages the group holds for the topic (from a settled node's own data)."""
    group.wait_settled()
    out = group.cli("topic", "list", "--endpoint", group.addresses[0], "--json").stdout
    for line in out.splitlines():
        t = json.loads(line)
        if t["topic"] == topic:
            return sum(q["max_offset"] - q["min_offset"] for q in t["offsets"])
    raise AssertionError(f"group {group.group} has no topic {topic}: {out}")


def test_producer_through_router_lands_in_both_groups(routed):
    """Topic created via the router on every group; a Producer given only the router's address spreads over both."""
    router, (g1, g2) = routed
    status = wait_router_nodes(g1, router, 6)
    assert sorted({n["group"] for n in status}) == ["g1", "g2"]
    topic = unique_topic("routed")
    g1.cli("topic", "create", "--endpoint", router.addr, "--topic", topic, "--queues", str(QUEUES))
    producer = make_producer(router.addr, topic)
    try:
        receipts = [producer.send(make_message(topic, f"routed-{i}".encode())) for i in range(30)]
    finally:
        producer.shutdown()
    assert all(r.message_id for r in receipts)
    in_g1, in_g2 = messages_in_group(g1, topic), messages_in_group(g2, topic)
    assert in_g1 > 0 and in_g2 > 0, (in_g1, in_g2)
    assert in_g1 + in_g2 == 30
    # Consuming through the router's route reads every queue of both groups.
    out = g1.cli("consume", "--endpoint", router.addr, "--topic", topic, "--from", "earliest", "--until-idle", "1s").stdout
    bodies = sorted(json.loads(line)["body"] for line in out.splitlines() if line.strip())
    assert bodies == sorted(f"routed-{i}" for i in range(30))
    # A SimpleConsumer given only the router's address pops from both groups' queues.
    consumer = make_consumer(router.addr, unique_group("routed"), topic)
    try:
        got = receive_until(consumer, 30)
    finally:
        consumer.shutdown()
    assert sorted(m.body.decode() for m in got) == sorted(f"routed-{i}" for i in range(30))
    assert {m.endpoints for m in got} and len({str(m.endpoints) for m in got}) == 2, "not every group served the consumer"


def test_router_answers_unknown_and_illegal_topics(routed):
    """QueryRoute via the router: TOPIC_NOT_FOUND for a topic no group has, ILLEGAL_TOPIC for a bad name."""
    router, (g1, _) = routed
    for topic, code in ((unique_topic("missing"), "TOPIC_NOT_FOUND"), ("bad/topic", "ILLEGAL_TOPIC")):
        out = g1.cli("consume", "--endpoint", router.addr, "--topic", topic, "--until-idle", "1s", check=False)
        assert out.returncode != 0 and code in out.stderr, out.stderr
