"""The node agent's settings: which cluster, which node, where pods live, and the few knobs tests turn.

Owns: defaults that describe this machine honestly (CPU count, memory, disk, no GPU unless told) and
the image table (what a container runs when its `command` is unset).
Must not: do I/O beyond measuring the machine.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# What an image runs when a container sets no command (its ENTRYPOINT), by a substring of the image name.
# The worker image's Dockerfile (job_image/Dockerfile) has ENTRYPOINT ["kompress", "worker"].
DEFAULT_ENTRYPOINTS = {"kompress-job": ["kompress", "worker"], "kompress-worker": ["kompress", "worker"]}
GPU_RESOURCE = "nvidia.com/gpu"


def random_pod_cidr() -> str:
    """A /24 of its own inside 127.0.0.0/8, so two agents on one machine never hand out the same pod IP."""
    return f"127.{random.randint(100, 254)}.{random.randint(0, 255)}.0/24"


def machine_capacity(state_dir: Path, gpus: int) -> dict[str, str]:
    disk = shutil.disk_usage(state_dir if state_dir.exists() else Path.cwd()).total
    capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{psutil.virtual_memory().total // 1024}Ki",
                "ephemeral-storage": f"{disk // 1024}Ki", "pods": "110"}
    if gpus:
        capacity[GPU_RESOURCE] = str(gpus)
    return capacity


@dataclass
class AgentConfig:
    kubeconfig: Path
    state_dir: Path
    node_name: str = "kompress-node"
    # Where a container's bare program names are looked up first: this interpreter's venv (kompress, python).
    bin_dirs: tuple[Path, ...] = (Path(sys.executable).parent,)
    pod_cidr: str = field(default_factory=random_pod_cidr)
    gpus: int = 0
    capacity: dict[str, str] = field(default_factory=dict)  # empty: measured (machine_capacity)
    # Delete the Node when the agent stops (tests: nothing is scheduled to a node nobody plays);
    # otherwise it is left NotReady, as a stopped kubelet leaves it.
    delete_node_on_stop: bool = True
    # A deleted pod's grace period is capped to this (terminationGracePeriodSeconds defaults to 30).
    max_grace_s: float = 30.0
    # Kill a container over its memory limit, as the kernel's cgroup OOM killer would (reason OOMKilled).
    enforce_memory_limits: bool = True
    # Added to every container's environment (after the image's, before the pod's).
    extra_env: dict[str, str] = field(default_factory=dict)
    entrypoints: dict[str, list[str]] = field(default_factory=lambda: dict(DEFAULT_ENTRYPOINTS))
    # The kubelet re-reads its pods at least this often, besides watch events and process exits.
    resync_s: float = 1.0
    # Set from the kubeconfig by the agent: KUBERNETES_SERVICE_HOST/PORT of the pods.
    api_host_port: str = ""

    def __post_init__(self) -> None:
        self.kubeconfig = Path(self.kubeconfig)
        self.state_dir = Path(self.state_dir)
        self.bin_dirs = tuple(Path(d) for d in self.bin_dirs)
        if not self.capacity:
            self.capacity = machine_capacity(self.state_dir, self.gpus)
