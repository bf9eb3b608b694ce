"""Raw apache.rocketmq.v2 gRPC calls, using the protobuf/gRPC stubs shipped inside the official
rocketmq-python-client package (rocketmq.grpc_protocol)."""
import time
import uuid
from datetime import datetime

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from rocketmq.grpc_protocol import definition_pb2 as pb
from rocketmq.grpc_protocol import service_pb2 as svc
from rocketmq.grpc_protocol import service_pb2_grpc as svc_grpc

Code = pb.Code
# Room for a body a little over the server's 4 MiB limit, and then some.
MAX_GRPC_BYTES = 64 * 1024 * 1024
RPC_TIMEOUT_S = 15


def channel(addr):
    return grpc.insecure_channel(
        addr,
        options=[
            ("grpc.max_send_message_length", MAX_GRPC_BYTES),
            ("grpc.max_receive_message_length", MAX_GRPC_BYTES),
        ],
    )


_stubs = {}


def stub(addr):
    """A stub on a channel reused per address."""
    if addr not in _stubs:
        _stubs[addr] = svc_grpc.MessagingServiceStub(channel(addr))
    return _stubs[addr]


def metadata(client_id="raftmq-pytest-raw", drop=()):
    """The headers the official clients send; `client_id=None` leaves x-mq-client-id out."""
    md = [
        ("x-mq-language", "PYTHON"),
        ("x-mq-protocol", "GRPC_V2"),
        ("x-mq-client-version", "5.1.2"),
        ("x-mq-date-time", datetime.now().strftime("%Y%m%dT%H%M%SZ")),
        ("x-mq-request-id", str(uuid.uuid4())),
        ("x-mq-namespace", ""),
    ]
    if client_id is not None:
        md.append(("x-mq-client-id", client_id))
    return [(k, v) for k, v in md if k not in drop]


_seq = 0


def new_message_id():
    """A unique 34-hex-digit id shaped like the official clients' message ids."""
    global _seq
    _seq += 1
    return "01" + uuid.uuid4().hex[:24].upper() + format(_seq & 0xFFFFFFFF, "08X")


def timestamp_ms(ms):
    ts = Timestamp()
    ts.FromMilliseconds(int(ms))
    return ts


def message(topic, body, tag="t", keys=("k",), properties=None, message_id=None, delivery_timestamp_ms=None,
            message_type=pb.MessageType.NORMAL):
    """A v2 Message as the official producer builds it."""
    m = pb.Message()
    m.topic.name = topic
    m.body = body
    if properties:
        m.user_properties.update(properties)
    sp = m.system_properties
    if tag is not None:
        sp.tag = tag
    sp.keys.extend(keys)
    sp.message_id = message_id or new_message_id()
    sp.message_type = message_type
    sp.body_encoding = pb.Encoding.IDENTITY
    sp.born_host = "127.0.0.1"
    sp.born_timestamp.CopyFrom(timestamp_ms(time.time() * 1000))
    if delivery_timestamp_ms is not None:
        sp.delivery_timestamp.CopyFrom(timestamp_ms(delivery_timestamp_ms))
    return m


def send(addr, messages, md=None):
    request = svc.SendMessageRequest(messages=list(messages))
    return stub(addr).SendMessage(request, metadata=md if md is not None else metadata(), timeout=RPC_TIMEOUT_S)


def query_route(addr, topic, md=None):
    request = svc.QueryRouteRequest()
    request.topic.name = topic
    return stub(addr).QueryRoute(request, metadata=md if md is not None else metadata(), timeout=RPC_TIMEOUT_S)


def pull(addr, topic, queue_id, offset=0, batch_size=32, group="raftmq-pytest", wait_ms=0, md=None):
    """One PullMessage call: (status, [messages], next_offset)."""
    request = svc.PullMessageRequest(offset=offset, batch_size=batch_size)
    request.group.name = group
    request.message_queue.topic.name = topic
    request.message_queue.id = queue_id
    request.filter_expression.type = pb.FilterType.TAG
    request.filter_expression.expression = "*"
    request.long_polling_timeout.CopyFrom(Duration(seconds=wait_ms // 1000, nanos=(wait_ms % 1000) * 1_000_000))
    status, messages, next_offset = None, [], None
    for frame in stub(addr).PullMessage(request, metadata=md if md is not None else metadata(), timeout=RPC_TIMEOUT_S):
        kind = frame.WhichOneof("content")
        if kind == "status":
            status = frame.status
        elif kind == "message":
            messages.append(frame.message)
        elif kind == "next_offset":
            next_offset = frame.next_offset
    return status, messages, next_offset


def pull_all(addr, topic, queue_count):
    """Every message of every queue of the topic (offset order within a queue)."""
    out = []
    for queue_id in range(queue_count):
        offset = 0
        while True:
            status, messages, next_offset = pull(addr, topic, queue_id, offset=offset)
            if status is None or status.code not in (Code.OK, Code.MESSAGE_NOT_FOUND):
                raise AssertionError(f"pull {topic}/{queue_id}@{offset} failed: {status}")
            out.extend(messages)
            if not messages or next_offset is None or next_offset <= offset:
                break
            offset = next_offset
    return out


def query_offset(addr, topic, queue_id, policy, timestamp_ms=None, md=None):
    request = svc.QueryOffsetRequest(query_offset_policy=policy)
    request.message_queue.topic.name = topic
    request.message_queue.id = queue_id
    if timestamp_ms is not None:
        request.timestamp.CopyFrom(globals()["timestamp_ms"](timestamp_ms))
    return stub(addr).QueryOffset(request, metadata=md if md is not None else metadata(), timeout=RPC_TIMEOUT_S)


def duration_ms(ms):
    return Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def receive(addr, topic, group, queue_id=-1, batch_size=32, invisible_ms=30_000, wait_ms=0, expression="*", md=None):
    """One ReceiveMessage call: (status, [messages])."""
    request = svc.ReceiveMessageRequest(batch_size=batch_size)
    request.group.name = group
    request.message_queue.topic.name = topic
    request.message_queue.id = queue_id
    request.filter_expression.type = pb.FilterType.TAG
    request.filter_expression.expression = expression
    if invisible_ms is not None:
        request.invisible_duration.CopyFrom(duration_ms(invisible_ms))
    request.long_polling_timeout.CopyFrom(duration_ms(wait_ms))
    status, messages = None, []
    for frame in stub(addr).ReceiveMessage(request, metadata=md if md is not None else metadata(), timeout=RPC_TIMEOUT_S + wait_ms / 1000):
        kind = frame.WhichOneof("content")
        if kind == "status":
            status = frame.status
        elif kind == "message":
            messages.append(frame.message)
    return status, messages


def ack(addr, topic, group, handles, md=None):
    """AckMessage for (message_id, receipt_handle) pairs: the response."""
    request = svc.AckMessageRequest(entries=[svc.AckMessageEntry(message_id=m, receipt_handle=h) for m, h in handles])
    request.group.name = group
    request.topic.name = topic
    return stub(addr).AckMessage(request, metadata=md if md is not None else metadata(), timeout=RPC_TIMEOUT_S)


def change_invisible(addr, topic, group, message_id, handle, invisible_ms, md=None):
    request = svc.ChangeInvisibleDurationRequest(receipt_handle=handle, message_id=message_id)
    request.group.name = group
    request.topic.name = topic
    request.invisible_duration.CopyFrom(Duration(seconds=invisible_ms // 1000 if invisible_ms >= 0 else -1))
    return stub(addr).ChangeInvisibleDuration(request, metadata=md if md is not None else metadata(), timeout=RPC_TIMEOUT_S)


def update_offset(addr, topic, group, queue_id, offset, md=None):
    request = svc.UpdateOffsetRequest(offset=offset)
    request.group.name = group
    request.message_queue.topic.name = topic
    request.message_queue.id = queue_id
    return stub(addr).UpdateOffset(request, metadata=md if md is not None else metadata(), timeout=RPC_TIMEOUT_S)


def get_offset(addr, topic, group, queue_id, md=None):
    request = svc.GetOffsetRequest()
    request.group.name = group
    request.message_queue.topic.name = topic
    request.message_queue.id = queue_id
    return stub(addr).GetOffset(request, metadata=md if md is not None else metadata(), timeout=RPC_TIMEOUT_S)
