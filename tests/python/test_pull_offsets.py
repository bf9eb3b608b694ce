"""Pull consumers' committed offsets: UpdateOffset through any node goes through the Raft log, so
GetOffset answers the same on every node and after the leader changes."""
import rmq_grpc as rg
from test_simple_consumer import unique_group

Code = rg.Code


def test_committed_offsets_survive_a_leader_change(cluster):
    topic = cluster.create_topic(queues=1)
    response = rg.send(cluster.addresses[0], [rg.message(topic, f"o{i}".encode()) for i in range(10)])
    assert response.status.code == Code.OK
    group = unique_group("pull")
    # Pull from an offset, then commit where the pull ended, through a follower.
    status, messages, next_offset = rg.pull(cluster.addresses[1], topic, 0, offset=1, group=group)
    assert status.code == Code.OK and [m.system_properties.queue_offset for m in messages] == list(range(1, next_offset))
    leader_id = cluster.leader()[0]
    follower = next(a for i, a in enumerate(cluster.addresses, start=1) if i != leader_id)
    assert rg.get_offset(follower, topic, group, 0).status.code == Code.CONSUMER_GROUP_NOT_FOUND
    assert rg.update_offset(follower, topic, group, 0, next_offset).status.code == Code.OK
    other_topic = cluster.create_topic(queues=1)
    assert rg.get_offset(follower, other_topic, group, 0).status.code == Code.OFFSET_NOT_FOUND
    for addr in cluster.addresses:
        answer = rg.get_offset(addr, topic, group, 0)
        assert (answer.status.code, answer.offset) == (Code.OK, next_offset), addr
    # Past the queue's end is refused and changes nothing.
    assert rg.update_offset(follower, topic, group, 0, 10_000).status.code == Code.ILLEGAL_OFFSET
    assert rg.get_offset(follower, topic, group, 0).offset == next_offset
    # Hand leadership over; the new leader answers the committed offset.
    _, target = cluster.transfer_leader()
    answer = rg.get_offset(cluster.addresses[target - 1], topic, group, 0)
    assert (answer.status.code, answer.offset) == (Code.OK, next_offset)
