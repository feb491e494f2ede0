"""A multi-worker worker before TensorFlow's cluster: TF_CONFIG checked, its port held, peers awaited by name (real sockets)."""

from __future__ import annotations

import json
import random
import socket
import threading

import pytest

from trainwell.errors import UsageError
from trainwell.training import peers


def _free_ports(count: int) -> list[int]:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def cluster_task(ports: list[int], index: int) -> peers.ClusterTask:
    config = {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]}, "task": {"type": "worker", "index": index}}
    return peers.read_tf_config(json.dumps(config))


def test_tf_config_with_a_chief_names_every_task():
    task = peers.read_tf_config(json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2", "[::1]:3"]},
                                            "task": {"type": "worker", "index": 1}}))
    assert task.names == ("chief 0", "worker 0", "worker 1") and task.name == "worker 1" and task.port == 3


def hostile_tf_configs(count: int, seed: int = 0) -> list[str]:
    """Seeded TF_CONFIG texts: cut, retyped, out-of-range and repeated pieces of a valid one."""
    rng = random.Random(seed)
    values: list[object] = [None, True, -1, 0, 1, 2, 10**30, 1.5, "0", "", "h:0", "h:65536", "h:x", ":1", "h:1",
                            "h:1 ", [], ["h:1", "h:1"], ["h:1", 2], {}, {"worker": "h:1"}, "\n", "\u2028", "worker",
                            "chief", "ps", float("nan")]
    texts = ["", "{", "[]", "null", "1", '"x"', "{" * 5000, "x" * (peers.MAX_TF_CONFIG_CHARS + 1)]
    while len(texts) < count:
        config: dict = {"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 0}}
        for _ in range(rng.randint(1, 3)):
            where = rng.choice([("cluster",), ("task",), ("cluster", "worker"), ("cluster", "chief"),
                                ("task", "type"), ("task", "index")])
            target = config
            for key in where[:-1]:
                target = target.setdefault(key, {}) if isinstance(target, dict) else {}
            if isinstance(target, dict):
                target[where[-1]] = rng.choice(values)
        text = json.dumps(config)
        texts.append(text[: rng.randint(0, len(text))] if rng.random() < 0.2 else text)
    return texts


def test_any_tf_config_is_a_task_or_a_usage_error():
    refused = 0
    for text in hostile_tf_configs(400):
        try:
            task = peers.read_tf_config(text)
        except UsageError as error:
            refused += 1
            assert "\n" not in error.message and "\u2028" not in error.message
            continue
        assert 0 <= task.index < len(task.addresses) and 0 < task.port < 65536
        assert len(set(task.addresses)) == len(task.addresses)
    assert refused > 200  # most mutations break it; the rest are valid clusters


def test_a_worker_alone_says_whom_it_waits_for_then_gives_up_naming_it():
    ports = _free_ports(2)
    said: list[str] = []
    with pytest.raises(UsageError) as error:
        peers.wait_for_peers(cluster_task(ports, 0), timeout_s=1.0, say=said.append)
    assert f"worker 1 at 127.0.0.1:{ports[1]}" in said[0] and f"port {ports[0]}" in said[0]
    assert f"worker 1 at 127.0.0.1:{ports[1]}, which never answered" in error.value.message
    assert peers.TIMEOUT_VARIABLE in error.value.message
    socket.create_server(("", ports[0])).close()  # the port was given back


def test_two_workers_find_each_other():
    ports = _free_ports(3)
    failures: list[BaseException] = []
    servers: list[socket.socket] = []  # what TensorFlow's server is on a port once its worker is done waiting

    def worker(index: int) -> None:
        try:
            peers.wait_for_peers(cluster_task(ports, index), timeout_s=30, say=lambda line: None)
            servers.append(socket.create_server(("", ports[index])))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for server in servers:
        server.close()
    assert failures == [] and not any(thread.is_alive() for thread in threads) and len(servers) == 3


def test_a_busy_port_is_a_usage_error_naming_it_and_the_index():
    ports = _free_ports(2)
    with socket.create_server(("", ports[1])), pytest.raises(UsageError) as error:
        peers.wait_for_peers(cluster_task(ports, 1), timeout_s=5, say=lambda line: None)
    assert f"port {ports[1]}, this worker's (worker 1 in TF_CONFIG" in error.value.message
    assert "same task index" in error.value.message


def test_a_peer_given_this_workers_index_on_another_machine_is_named():
    # Two machines both told index 0: the one at worker 1's address answers "worker 0".
    ports = _free_ports(2)
    impostor = peers.Greeter(cluster_task(ports, 0), port=ports[1])
    try:
        with pytest.raises(UsageError) as error:
            peers.wait_for_peers(cluster_task(ports, 0), timeout_s=10, say=lambda line: None)
    finally:
        impostor.close()
    assert f"at 127.0.0.1:{ports[1]}, which TF_CONFIG lists as worker 1, says it is worker 0 the same as this " \
           "worker's: two workers were given the same task index" in error.value.message


def test_a_peer_with_another_cluster_list_is_named():
    ports = _free_ports(3)
    other = peers.Greeter(cluster_task([ports[0], ports[1], ports[2]], 1), port=ports[1])
    try:
        with pytest.raises(UsageError, match="another cluster list"):
            peers.wait_for_peers(cluster_task(ports[:2], 0), timeout_s=10, say=lambda line: None)
    finally:
        other.close()


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "ten", "1e9"])
def test_a_bad_peer_timeout_is_a_usage_error(monkeypatch, value):
    monkeypatch.setenv(peers.TIMEOUT_VARIABLE, value)
    with pytest.raises(UsageError, match=peers.TIMEOUT_VARIABLE):
        peers.timeout_from_environment()
