"""`raftmq dev` (the README's run command) serves the official Python client out of the box."""
import json
import signal
import socket
import subprocess
import time

import pytest

from conftest import RAFTMQ_BIN, unique_topic
from test_producer import make_message, make_producer

DEV_ENDPOINTS = "127.0.0.1:8081;127.0.0.1:8082;127.0.0.1:8083"


def port_busy(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def cli(*args):
    out = subprocess.run([RAFTMQ_BIN, *args], capture_output=True, text=True, timeout=30)
    return out.returncode, out.stdout, out.stderr


@pytest.fixture
def dev(tmp_path):
    busy = [p for p in (8080, 8081, 8082, 8083, 9091, 9092, 9093) if port_busy(p)]
    if busy:
        pytest.fail(f"raftmq dev needs ports 8080-8083 and 9091-9093; busy: {busy}")
    log = open(tmp_path / "dev.log", "w")
    proc = subprocess.Popen([RAFTMQ_BIN, "dev"], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            code, out, _ = cli("cluster", "status", "--endpoint", "127.0.0.1:8081", "--json")
            nodes = json.loads(out)["nodes"] if code == 0 else []
            leaders = [n for n in nodes if n["role"] == "leader"]
            if leaders and len(nodes) == 3 and all(n["applied"] >= leaders[0]["committed"] > 0 for n in nodes):
                break
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.time() < deadline, f"raftmq dev did not settle: {out}\n{(tmp_path / 'dev.log').read_text()}"
            time.sleep(0.2)
        yield tmp_path
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_python_producer_gets_send_ok_from_raftmq_dev(dev):
    """The official Producer sends to `raftmq dev` and gets SEND_OK with dense offsets; the data is under ./raftmq-data."""
    log = (dev / "dev.log").read_text()
    assert "raftmq dev is up" in log and "127.0.0.1:8081" in log, log
    assert (dev / "raftmq-data" / "node-1" / "commitlog").is_dir()
    topic = unique_topic("dev")
    code, _, err = cli("topic", "create", "--endpoint", "127.0.0.1:8081", "--topic", topic, "--queues", "1")
    assert code == 0, err
    producer = make_producer(DEV_ENDPOINTS, topic)
    try:
        receipts = [producer.send(make_message(topic, f"dev-{i}".encode(), tag="t", keys=(f"k{i}",))) for i in range(5)]
    finally:
        producer.shutdown()
    assert [r.offset for r in receipts] == [0, 1, 2, 3, 4]
    code, out, err = cli("consume", "--endpoint", "127.0.0.1:8082", "--topic", topic, "--from", "earliest", "--until-idle", "1s", "--output", "jsonl")
    assert code == 0, err
    read = [json.loads(line) for line in out.splitlines()]
    assert [m["body"] for m in read] == [f"dev-{i}" for i in range(5)]
    assert [m["message_id"] for m in read] == [r.message_id for r in receipts]


def test_raftmq_dev_runs_a_router(dev):
    """The dev nodes register with the dev router on 127.0.0.1:8080, which serves routes and cluster status."""
    deadline = time.time() + 30
    while True:
        code, out, err = cli("cluster", "status", "--endpoint", "127.0.0.1:8080", "--json")
        nodes = json.loads(out)["nodes"] if code == 0 else []
        if len(nodes) == 3:
            break
        assert time.time() < deadline, f"the dev router does not list the three nodes: {out} {err}"
        time.sleep(0.2)
    assert {n["group"] for n in nodes} == {"g1"}
    topic = unique_topic("devr")
    code, _, err = cli("topic", "create", "--endpoint", "127.0.0.1:8080", "--topic", topic, "--queues", "2")
    assert code == 0, err
    producer = make_producer("127.0.0.1:8080", topic)
    try:
        receipt = producer.send(make_message(topic, b"via-router"))
    finally:
        producer.shutdown()
    assert receipt.message_id
