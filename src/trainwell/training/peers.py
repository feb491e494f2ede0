"""Before a multi-worker run starts TensorFlow's cluster: TF_CONFIG checked, this worker's port held, its peers awaited by name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from trainwell.console import shown
from trainwell.errors import UsageError

TIMEOUT_VARIABLE = "TRAINWELL_PEER_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0  # how long a worker waits for the others to start (a slow `dvc pull` on one of them)
MAX_TIMEOUT_S = 7 * 24 * 3600.0
MAX_TF_CONFIG_CHARS = 1 << 20  # a cluster of thousands of workers is ~50 kB
SAY_EVERY_S = 15.0  # how often a waiting worker says so again
HELLO = b"trainwell-worker "  # what this worker's port answers while it waits: its index and its cluster
SCALING_OUT = "see docs/scale.md, 'Scaling out'"


@dataclass(frozen=True)
class ClusterTask:
    """This worker's place in the cluster TF_CONFIG describes."""

    addresses: tuple[str, ...]  # host:port of every task, chief first when one is listed, then the workers
    names: tuple[str, ...]  # each task as TF_CONFIG names it ("chief 0", "worker 1"), in the same order
    index: int  # this task's position in both

    @property
    def name(self) -> str:
        return self.names[self.index]

    @property
    def port(self) -> int:
        return port_of(self.addresses[self.index])

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.addresses).encode()).hexdigest()[:16]


def port_of(address: str) -> int:
    """The port of host:port (or [v6]:port); UsageError naming the address when there is none."""
    return host_and_port(address)[1]


def host_and_port(address: str) -> tuple[str, int]:
    """(host, port) of host:port, a v6 host without its brackets; UsageError naming the address when there is no port."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"TF_CONFIG lists '{shown(address)}', which is not host:port with a port 1-65535; "
                         f"write every task as host:port, {SCALING_OUT}")
    return host.strip("[]"), int(port)


def read_tf_config(text: str) -> ClusterTask:
    """The task TF_CONFIG describes; UsageError (exit 2) naming what is wrong."""
    if len(text) > MAX_TF_CONFIG_CHARS:
        raise UsageError(f"TF_CONFIG is {len(text)} characters; a cluster description is at most a few kB")
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"TF_CONFIG is not JSON ({shown(str(exc))}); {SCALING_OUT}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UsageError(f"TF_CONFIG needs a \"cluster\" and a \"task\" object, e.g. {{\"cluster\": {{\"worker\": "
                         f"[\"host1:12345\", \"host2:12345\"]}}, \"task\": {{\"type\": \"worker\", \"index\": 0}}}}; {SCALING_OUT}")
    addresses, names = [], []
    for job in ("chief", "worker"):
        listed = cluster.get(job, [])
        if not isinstance(listed, list) or not all(isinstance(address, str) for address in listed):
            raise UsageError(f"TF_CONFIG's cluster \"{job}\" must be a list of \"host:port\" strings")
        addresses += listed
        names += [f"{job} {index}" for index in range(len(listed))]
    kind, index = task.get("type"), task.get("index")
    jobs = {job: len(cluster.get(job, [])) for job in ("chief", "worker")}
    if not isinstance(kind, str) or kind not in jobs or not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < jobs[kind]:
        raise UsageError(f"TF_CONFIG's task is {shown(json.dumps(task)[:200])}, but its cluster lists {jobs['worker']} "
                         f"worker(s) (indices 0-{jobs['worker'] - 1}) and {jobs['chief']} chief(s); give each "
                         f"machine its own index in that range, {SCALING_OUT}")
    for address in addresses:
        port_of(address)
    repeated = sorted({address for address in addresses if addresses.count(address) > 1})
    if repeated:
        raise UsageError(f"TF_CONFIG's cluster lists {shown(repeated[0])} more than once; every task needs its own "
                         "host:port")
    position = index + (jobs["chief"] if kind == "worker" else 0)
    return ClusterTask(addresses=tuple(addresses), names=tuple(names), index=position)


def timeout_from_environment() -> float:
    """Seconds to wait for the peers: TRAINWELL_PEER_TIMEOUT, or the default."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_TIMEOUT_S:  # NaN fails this too
        raise UsageError(f"{TIMEOUT_VARIABLE}={shown(text[:50])} is not a number of seconds above 0 and up to "
                         f"{MAX_TIMEOUT_S:.0f} (a week)")
    return seconds


class Greeter:
    """Holds this worker's port while it waits (so a second worker given the same index fails at once)
    and answers each peer that connects with this worker's index and cluster."""

    def __init__(self, task: ClusterTask, *, port: int | None = None) -> None:
        self.task = task
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # TensorFlow binds the port right after close(): SO_REUSEADDR lets it despite TIME_WAIT,
        # and still refuses a port another process listens on.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        chosen = task.port if port is None else port
        try:
            self.socket.bind(("", chosen))
        except OSError as exc:
            self.socket.close()
            raise UsageError(
                f"port {chosen}, this worker's ({task.name} in TF_CONFIG, {shown(task.addresses[task.index])}), is in "
                f"use ({exc.strerror or exc}): by another worker given the same task index, or another program. Give "
                f"each worker its own index, or change that port in the cluster list on every worker") from None
        self.socket.listen(64)
        self.socket.settimeout(0.2)
        self.hello = HELLO + json.dumps({"index": task.index, "cluster": task.fingerprint()}).encode() + b"\n"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._answer, name="trainwell-greeter", daemon=True)
        self.thread.start()

    def _answer(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:  # the 0.2 s poll, or the socket closed
                continue
            with connection, contextlib.suppress(OSError):
                connection.sendall(self.hello)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.socket.close()


def greeting_from(address: str, *, timeout_s: float = 2.0) -> bytes | None:
    """What the task at `address` says on connecting (b"" for a port that says nothing, such as
    TensorFlow's own server), or None when nothing listens there yet."""
    try:
        with socket.create_connection(host_and_port(address), timeout=timeout_s) as connection:
            received = b""
            while not received.endswith(b"\n") and len(received) < 4096:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                received += chunk
            return received
    except TimeoutError:
        return b""  # connected, then silent: a server that is not a waiting trainwell worker
    except OSError:
        return None


def check_greeting(task: ClusterTask, peer: int, greeting: bytes) -> None:
    """Refuse a peer that is a trainwell worker with this worker's index, another index, or another cluster."""
    if not greeting.startswith(HELLO):
        return  # already past waiting: TensorFlow's own server answers there
    try:
        said = json.loads(greeting[len(HELLO):])
        index, cluster = int(said["index"]), str(said["cluster"])
    except (ValueError, KeyError, TypeError):
        return
    address, names = shown(task.addresses[peer]), task.names
    if index != peer:
        same = " the same as this worker's" if index == task.index else ""
        raise UsageError(f"the worker at {address}, which TF_CONFIG lists as {names[peer]}, says it is "
                         f"{names[index] if 0 <= index < len(names) else index}{same}: two workers were given "
                         f"the same task index. Give each machine its own index, {SCALING_OUT}")
    if cluster != task.fingerprint():
        raise UsageError(f"{names[peer]} at {address} was given another cluster list in its TF_CONFIG; every worker "
                         "needs the same list, in the same order")


def wait_for_peers(task: ClusterTask, *, timeout_s: float, say: Callable[[str], None]) -> None:
    """Hold this worker's port and wait until every other task answers, saying whom it waits for;
    UsageError (exit 2) after `timeout_s`, naming the tasks that never answered."""
    greeter = Greeter(task)
    try:
        pending = [peer for peer in range(len(task.addresses)) if peer != task.index]
        start = last_said = time.monotonic()
        first = True
        while pending:
            for peer in list(pending):
                greeting = greeting_from(task.addresses[peer])
                if greeting is not None:
                    check_greeting(task, peer, greeting)
                    pending.remove(peer)
            waited = time.monotonic() - start
            if not pending:
                break
            waiting = ", ".join(f"{task.names[peer]} at {shown(task.addresses[peer])}" for peer in pending)
            if waited >= timeout_s:
                raise UsageError(f"{task.name} waited {waited:.0f} s for {waiting}, which never answered; start it "
                                 f"with the same TF_CONFIG cluster and its own index, check the host, port and "
                                 f"firewall, or wait longer with {TIMEOUT_VARIABLE}=SECONDS")
            if first or time.monotonic() - last_said >= SAY_EVERY_S:
                say(f"multi_worker: {task.name} of {len(task.addresses)} (port {task.port}) waiting for {waiting} "
                    f"({waited:.0f} of {timeout_s:.0f} s; {TIMEOUT_VARIABLE} sets it)")
                first, last_said = False, time.monotonic()
            time.sleep(0.5)
    finally:
        greeter.close()
