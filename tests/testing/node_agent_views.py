"""What the played kubelet's tests look at: Jobs and pods of the test's namespace, Events with who wrote
them, the agent's pod processes and log files. Shared by test_node_agent.py and test_node_agent_life.py."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from kompress_testing.node_agent import AgentThread


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (KeyError, IndexError, StopIteration, TypeError) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


def script(code: str) -> list[str]:
    return ["python", "-c", textwrap.dedent(code)]


def job_manifest(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": "registry.example/tool:1", "command": command}
    container.update(spec.pop("container", {}))
    pod_spec = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2, "containers": [container]}
    pod_spec.update(spec.pop("pod", {}))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, **spec, "template": {"spec": pod_spec}}}


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None)


class Node:
    """One played Node on the test's namespace, with the views these tests need."""

    def __init__(self, api: Any, agent: AgentThread, state_dir: Path) -> None:
        self.api = api
        self.agent = agent
        self.state_dir = state_dir

    @property
    def name(self) -> str:
        return self.agent.config.node_name

    @property
    def client(self) -> Any:
        return self.api.client

    def url(self, plural: str, name: str | None = None) -> str:
        return self.api.path(plural, name=name, api_version="batch/v1" if plural == "jobs" else "v1")

    def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        return self.client.post(self.url(plural), obj)

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self.create("jobs", manifest)

    def job(self, name: str) -> dict[str, Any]:
        return self.client.get(self.url("jobs", name))

    def pods(self, job: str) -> list[dict[str, Any]]:
        return self.client.get(self.url("pods"), labelSelector=f"job-name={job}")["items"]

    def pod(self, name: str) -> dict[str, Any]:
        return self.client.get(self.url("pods", name))

    def wait_job(self, name: str, ctype: str, timeout: float = 30.0) -> dict[str, Any]:
        return wait_for(f"Job {name} {ctype}", lambda: (j := self.job(name)) and (condition(j, ctype) or {}).get("status") == "True" and j, timeout)

    def wait_pod_phase(self, job: str, phase: str, count: int = 1) -> list[dict[str, Any]]:
        return wait_for(f"{count} {phase} pod(s) of {job}",
                        lambda: len(pods := [p for p in self.pods(job) if p["status"].get("phase") == phase]) >= count and pods)

    def events(self, name: str) -> list[tuple[str, str, str]]:
        """(component, reason, message) of the Events about `name`, whoever wrote them."""
        items = self.client.get(self.url("events"))["items"]
        return [((e.get("source") or {}).get("component") or e.get("reportingComponent", ""), e["reason"], e.get("message", ""))
                for e in items if e["involvedObject"]["name"] == name]

    def log(self, pod: dict[str, Any], container: str = "main") -> str:
        return (self.state_dir / "logs" / f"{self.api.namespace}_{pod['metadata']['name']}_{container}.log").read_text()

    def processes(self) -> list[psutil.Process]:
        """The pods' processes this agent runs (children of this test process started by the agent)."""
        return [p for p in psutil.Process().children(recursive=True) if self._is_pod(p)]

    def _is_pod(self, proc: psutil.Process) -> bool:
        try:
            return any(str(self.state_dir) in (arg or "") for arg in proc.environ().values())
        except psutil.Error:
            return False


@pytest.fixture
def node(apiserver: Any, node_agent: AgentThread, tmp_path: Path) -> Node:
    return Node(apiserver, node_agent, tmp_path / "node")
