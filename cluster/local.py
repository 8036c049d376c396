"""A real multi-node Ray on one machine: a head node and worker nodes, each a separate ``ray start --block``
process with its own CPU count, ports and custom resources. What a cluster of several machines does, on one.

    python -m cluster.local [--workers 2] [--worker-cpus 1] [--gpu-as gpu_slot]   # prints the address; Ctrl-C stops

The head gets 1 CPU (Serve's controller and proxies) and the custom resource ``head``; worker ``i`` gets
``worker``, ``worker-i`` and ``--gpu-as`` slots (a GPU stand-in, so fractional-GPU placements run on CPU-only
machines). ``stop_node`` / ``start_node`` take one worker down and bring it back (the fault tests).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
# A cluster on one machine, reachable from it only: no auth token to distribute, and Serve's proxy checks wait
# for a busy small machine. Drivers of this cluster need the same RAY_AUTH_MODE. A stopped node drains for 5 s
# (Ray's default, 30 s, is for replacing pods behind a load balancer; the head waited it out on every stop).
LOCAL_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "5",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class NodeSpec:
    name: str
    num_cpus: int
    resources: dict[str, float] = field(default_factory=dict)
    num_gpus: int = 0


def worker_specs(count: int, cpus: int, gpu_as: str | None = None, gpu_slots: float = 1.0) -> list[NodeSpec]:
    """``count`` workers named ``worker-1``...; each has ``worker``, its own name and ``gpu_as`` slots."""
    extra = {gpu_as: gpu_slots} if gpu_as else {}
    return [NodeSpec(f"worker-{i}", cpus, {"worker": 1.0, f"worker-{i}": 1.0, **extra}) for i in range(1, count + 1)]


class LocalCluster:
    """Start with :meth:`start` (returns the GCS address); :meth:`stop` ends every node."""

    def __init__(
        self,
        workers: list[NodeSpec],
        head_cpus: int = 1,
        ray: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``env``: more environment for every node (e.g. ``deployments.modes.haproxy_env``: Serve's mode is
        fixed when the nodes start)."""
        self.env = dict(env or {})
        self.head = NodeSpec("head", head_cpus, {"head": 1.0})
        self.workers = {w.name: w for w in workers}
        self.ray = ray or str(Path(sys.executable).with_name("ray"))
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"  # the state API (``ray list ...``)
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs = Path(tempfile.mkdtemp(prefix="ensdef-cluster-"))  # one `ray start` log per node

    def _args(self, spec: NodeSpec) -> list[str]:
        ports = [free_port() for _ in range(7)]
        args = [
            self.ray, "start", "--block", "--disable-usage-stats",
            f"--num-cpus={spec.num_cpus}", f"--num-gpus={spec.num_gpus}",
            f"--resources={json.dumps(spec.resources)}",
            f"--node-manager-port={ports[0]}", f"--object-manager-port={ports[1]}",
            f"--metrics-export-port={ports[2]}", f"--dashboard-agent-listen-port={ports[3]}",
            f"--dashboard-agent-grpc-port={ports[4]}", f"--runtime-env-agent-port={ports[5]}",
            "--node-ip-address=127.0.0.1",
        ]  # fmt: skip
        if spec is self.head:
            return [*args, "--head", f"--port={self.port}", "--include-dashboard=true",
                    f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={ports[6]}"]  # fmt: skip
        return [*args, f"--address={self.address}"]

    def _launch(self, spec: NodeSpec) -> None:
        env = {**os.environ, **LOCAL_ENV, **self.env}
        with open(self.logs / f"{spec.name}.log", "ab") as log_file:
            self.procs[spec.name] = subprocess.Popen(
                self._args(spec), stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def state(self, kind: str, *filters: str) -> list[dict]:
        """``ray list <kind>`` through the state API as JSON rows (empty while the API is not up)."""
        cmd = [self.ray, "list", kind, f"--address={self.dashboard}", "--format=json", "--detail", "--limit=10000"]
        for f in filters:
            cmd += ["--filter", f]
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **LOCAL_ENV}
        )
        try:
            return list(json.loads(out.stdout))
        except json.JSONDecodeError:
            return []

    def node_ids(self) -> dict[str, str]:
        """Alive node name (``head``, ``worker-1``...) -> Ray node id, told apart by their custom resources."""
        out = {}
        for n in self.state("nodes", "state=ALIVE"):
            names = [k for k in n.get("resources_total", {}) if k == "head" or k in self.workers]
            if names:
                out[names[0]] = n["node_id"]
        return out

    def wait_for(self, count: int, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.node_ids()) < count:
            if dead := [n for n, p in self.procs.items() if p.poll() is not None]:
                tail = (self.logs / f"{dead[0]}.log").read_text()[-2000:]
                raise RuntimeError(f"`ray start` exited for {dead}; {dead[0]}'s log ends:\n{tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} Ray nodes not alive after {timeout_s:.0f}s")
            time.sleep(1)

    def start(self) -> str:
        self._launch(self.head)
        try:
            # one node at a time: a worker's `ray start` times out when the head (or a sibling starting at the
            # same moment on a small machine) is not up yet
            self.wait_for(1)
            for i, w in enumerate(self.workers.values(), start=2):
                self._launch(w)
                self.wait_for(i)
        except BaseException:
            self.stop()  # nothing left running when start-up fails
            raise
        log.info("local cluster at %s: head + %s", self.address, ", ".join(self.workers))
        return self.address

    def stop_node(self, name: str) -> None:
        """End node ``name`` (its ``ray start --block`` drains, then stops the node's raylet and workers)."""
        self._stop([name])

    def _stop(self, names: list[str]) -> None:
        """SIGTERM to every node of ``names`` at once, then wait for each (SIGKILL to its group after 60 s)."""
        procs = [self.procs.pop(n) for n in names]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def start_node(self, name: str) -> None:
        self._launch(self.workers[name])
        self.wait_for(len(self.procs))

    def stop(self) -> None:
        self._stop([n for n in self.procs if n != "head"])  # the workers together, then the head
        if "head" in self.procs:
            self._stop(["head"])
        # `ray start --head` records the cluster for `ray.init()` to find; do not leave a dead one behind
        current = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
        if current.exists() and current.read_text().strip().endswith(f":{self.port}"):
            current.unlink()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--worker-cpus", type=int, default=1)
    ap.add_argument("--head-cpus", type=int, default=1)
    ap.add_argument("--gpu-as", default="gpu_slot", help="custom resource standing in for GPUs ('' for none)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    cluster = LocalCluster(worker_specs(a.workers, a.worker_cpus, a.gpu_as or None), a.head_cpus)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print(cluster.start(), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
