"""The played kubelet (test harness, not product): kwok, but the pods really run.

On the real control plane (`kompress_testing.cluster`: kube-apiserver, kube-controller-manager with the
Job controller, kube-scheduler), and only through its API with an identity of its own, the agent
registers a Node and is that Node's **kubelet** (kubelet.py, runtime.py, podenv.py): each container of a
pod bound to it is a local process run with the pod's environment (Secrets and ConfigMaps read through
the API), a loopback IP of its own as `status.podIP`, its volumes as folders, its termination message
from a file, its log in a file served to kube-apiserver's `kubectl logs` proxy (logserver.py).
Pods are processes, not containers: no image is pulled, nothing is isolated.

Images are not pulled: a container's program is looked up in this repository's `.venv/bin` first (so
`kompress` is the worker's CLI, `python` the venv's), then on the host's PATH. See README.md.

    python -m kompress_testing.node_agent --kubeconfig KUBECONFIG --state-dir DIR --node-name NAME
    with AgentThread(AgentConfig(kubeconfig=..., state_dir=...)):   # in a test
"""

from kompress_testing.node_agent.agent import AGENT_NAMESPACE, AGENT_SERVICE_ACCOUNT, AgentThread, NodeAgent, rbac_manifests
from kompress_testing.node_agent.config import AgentConfig

__all__ = ["AGENT_NAMESPACE", "AGENT_SERVICE_ACCOUNT", "AgentConfig", "AgentThread", "NodeAgent", "rbac_manifests"]
