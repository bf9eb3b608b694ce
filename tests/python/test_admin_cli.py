"""The admin CLI against a three-node group: `raftmq topic create|update|list|describe|delete`,
`raftmq group create|list|describe|delete`, and pop consumption with `raftmq consume --group`
(lag and acked offsets as the group consumes)."""
import json
import uuid

from conftest import unique_topic


def unique_group(prefix="cg"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def send(cluster, topic, count, endpoint=None):
    out = cluster.cli("send", "--endpoint", endpoint or cluster.endpoints, "--topic", topic, "--body", "m", "--count", str(count)).stdout
    sent = json_lines(out)
    assert len(sent) == count and all(s["status"] == "SEND_OK" for s in sent), out
    return sent


def describe_group(cluster, group, topic=None, endpoint=None):
    args = ["group", "describe", "--endpoint", endpoint or cluster.addresses[0], "--group", group, "--json"]
    if topic:
        args += ["--topic", topic]
    return json.loads(cluster.cli(*args).stdout)


def describe_topic(cluster, topic, endpoint=None):
    return json.loads(cluster.cli("topic", "describe", "--endpoint", endpoint or cluster.addresses[0], "--topic", topic, "--json").stdout)


def pop(cluster, group, topic, *extra, endpoint=None):
    args = ["consume", "--endpoint", endpoint or cluster.addresses[0], "--topic", topic, "--group", group, "--until-idle", "1s", *extra]
    return json_lines(cluster.cli(*args).stdout)


def test_group_lag_follows_sends_and_pop_consumption(cluster):
    topic = cluster.create_topic(queues=4)
    group = unique_group()
    # Through a follower or the leader alike: writes are forwarded.
    cluster.cli("group", "create", "--endpoint", cluster.addresses[1], "--group", group)
    send(cluster, topic, 20)

    before = describe_group(cluster, group, topic)
    assert [q["queue_id"] for q in before["queues"]] == [0, 1, 2, 3], before
    assert sum(q["lag"] for q in before["queues"]) == 20, before
    for q in before["queues"]:
        assert q["lag"] == q["max_offset"] - q["min_offset"] and q["acked_offset"] == q["min_offset"] and q["inflight"] == 0, q

    # Through a follower, so that receives are forwarded to the leader.
    leader_id = cluster.leader()[0]
    follower = next(n.client_addr for n in cluster.nodes if n.node_id != leader_id)
    first = pop(cluster, group, topic, "--max", "5", endpoint=follower)
    assert len(first) == 5, first
    assert sum(q["lag"] for q in describe_group(cluster, group, topic)["queues"]) == 15

    rest = pop(cluster, group, topic, endpoint=follower)
    assert len(rest) == 15, rest
    seen = {(m["queue_id"], m["queue_offset"]) for m in first + rest}
    assert len(seen) == 20, "a message was handed out twice"

    # Asked through another node than the consumer used: members come from every node.
    after = describe_group(cluster, group, topic, endpoint=cluster.addresses[2])
    for q in after["queues"]:
        assert q["lag"] == 0 and q["acked_offset"] == q["max_offset"] and q["pop_offset"] == q["max_offset"], q
        assert q["inflight"] == 0, q
    assert sum(q["max_offset"] for q in after["queues"]) == 20
    # Each CLI run is one member (on the node it talked to, not also on the leader it was forwarded to).
    cli_members = [m for m in after["members"] if m["client_id"].startswith("raftmq-cli@")]
    assert len(cli_members) == 2 and len({m["client_id"] for m in cli_members}) == 2, after["members"]
    assert all(m["client_type"] == "SIMPLE_CONSUMER" and m["node_id"] != leader_id for m in cli_members), cli_members

    # Nothing is left: another pop hands out nothing.
    assert pop(cluster, group, topic) == []


def test_consume_group_tag_filter_takes_only_matching_messages(cluster):
    topic = cluster.create_topic(queues=2)
    group = unique_group()
    cluster.cli("group", "create", "--endpoint", cluster.addresses[0], "--group", group)
    for tag in ["a", "b", "c"]:
        cluster.cli("send", "--endpoint", cluster.endpoints, "--topic", topic, "--tag", tag, "--count", "3")
    got = pop(cluster, group, topic, "--tag-filter", "a || c")
    assert sorted(m["tag"] for m in got) == ["a"] * 3 + ["c"] * 3, got


def test_list_and_describe_topic_as_json(cluster):
    topic = cluster.create_topic(queues=3)
    sent = send(cluster, topic, 9)
    listed = {t["topic"]: t for t in json_lines(cluster.cli("topic", "list", "--endpoint", cluster.addresses[0], "--json").stdout)}
    assert topic in listed
    described = describe_topic(cluster, topic)
    assert described["queues"] == 3 and described["broker_group"] == "g1", described
    assert described["offsets"] == listed[topic]["offsets"]
    assert [q["queue_id"] for q in described["offsets"]] == [0, 1, 2]
    assert sum(q["max_offset"] - q["min_offset"] for q in described["offsets"]) == len(sent)
    assert all(q["min_offset"] == 0 for q in described["offsets"])
    # Each acked offset lies below its queue's max offset.
    assert max(s["offset"] for s in sent) < max(q["max_offset"] for q in described["offsets"])


def test_topic_update_grows_and_refuses_to_shrink(cluster):
    topic = cluster.create_topic(queues=2)
    cluster.cli("topic", "update", "--endpoint", cluster.addresses[2], "--topic", topic, "--queues", "6")
    assert describe_topic(cluster, topic)["queues"] == 6
    shrink = cluster.cli("topic", "update", "--endpoint", cluster.addresses[0], "--topic", topic, "--queues", "3", check=False)
    assert shrink.returncode != 0 and "cannot shrink" in shrink.stderr and "has 6 queues" in shrink.stderr, shrink.stderr
    assert describe_topic(cluster, topic)["queues"] == 6
    send(cluster, topic, 12)
    assert sum(q["max_offset"] for q in describe_topic(cluster, topic)["offsets"]) == 12


def test_group_list_create_twice_and_delete(cluster):
    group = unique_group()
    cluster.cli("group", "create", "--endpoint", cluster.addresses[0], "--group", group, "--max-delivery-attempts", "5", "--fifo")
    again = cluster.cli("group", "create", "--endpoint", cluster.addresses[0], "--group", group, check=False)
    assert again.returncode != 0 and "already exists" in again.stderr, again.stderr
    listed = {g["group"]: g for g in json_lines(cluster.cli("group", "list", "--endpoint", cluster.addresses[1], "--json").stdout)}
    assert listed[group] == {"group": group, "max_delivery_attempts": 5, "fifo": True}

    cluster.cli("group", "delete", "--endpoint", cluster.addresses[1], "--group", group)
    listed = {g["group"] for g in json_lines(cluster.cli("group", "list", "--endpoint", cluster.addresses[0], "--json").stdout)}
    assert group not in listed
    gone = cluster.cli("group", "describe", "--endpoint", cluster.addresses[0], "--group", group, check=False)
    assert gone.returncode != 0 and "CONSUMER_GROUP_NOT_FOUND" in gone.stderr, gone.stderr


def test_deleted_topic_is_gone_and_refuses_sends(cluster):
    topic = cluster.create_topic(queues=2)
    group = unique_group()
    cluster.cli("group", "create", "--endpoint", cluster.addresses[0], "--group", group)
    send(cluster, topic, 4)
    assert len(pop(cluster, group, topic, "--max", "2")) == 2
    cluster.cli("topic", "delete", "--endpoint", cluster.addresses[1], "--topic", topic)

    listed = {t["topic"] for t in json_lines(cluster.cli("topic", "list", "--endpoint", cluster.addresses[2], "--json").stdout)}
    assert topic not in listed
    described = cluster.cli("topic", "describe", "--endpoint", cluster.addresses[0], "--topic", topic, check=False)
    assert described.returncode != 0 and "TOPIC_NOT_FOUND" in described.stderr, described.stderr
    sent = cluster.cli("send", "--endpoint", cluster.endpoints, "--topic", topic, "--body", "x", check=False)
    assert sent.returncode != 0 and "TOPIC_NOT_FOUND" in sent.stderr, sent.stderr
    # The group's positions on the topic went with it.
    assert describe_group(cluster, group)["queues"] == []
    again = cluster.cli("topic", "delete", "--endpoint", cluster.addresses[0], "--topic", topic, check=False)
    assert again.returncode != 0 and "TOPIC_NOT_FOUND" in again.stderr, again.stderr
