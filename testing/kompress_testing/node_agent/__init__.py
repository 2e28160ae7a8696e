"""A local node agent (development harness, not product): kwok, but the pods really run.

Against any Kubernetes API (here the emulated one, `kompress_testing.apiserver`) and only through it,
with an identity of its own, it plays:

- the **Job controller** (jobs.py): pods from a Job's template, status and conditions as batch/v1 1.32
  writes them, suspend, backoffLimit, podFailurePolicy, activeDeadlineSeconds, ttlSecondsAfterFinished;
- the **scheduler** of its one Node (scheduler.py): requests against the node's capacity, nodeSelector;
- the **kubelet** (kubelet.py, runtime.py, podenv.py): each container is a local process run with the
  pod's environment (Secrets and ConfigMaps read through the API), a loopback IP of its own as
  `status.podIP`, its volumes as folders, its termination message from a file, its log in a file.

Images are not pulled: a container's program is looked up in this repository's `.venv/bin` first (so
`kompress` is the worker's CLI, `python` the venv's), then on the host's PATH. See README.md.

    python -m kompress_testing.node_agent --kubeconfig KUBECONFIG --state-dir DIR
    with AgentThread(AgentConfig(kubeconfig=..., state_dir=...)):   # in a test
"""

from kompress_testing.node_agent.agent import AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, AgentThread, NodeAgent, rbac_manifests
from kompress_testing.node_agent.config import AgentConfig

__all__ = ["AGENT_NAMESPACE", "AGENT_SERVICE_ACCOUNT", "AgentConfig", "AgentThread", "NodeAgent", "rbac_manifests"]
