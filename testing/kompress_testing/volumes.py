"""PersistentVolumes for tests on the real control plane: a hostPath PV and the claim it is bound to.

    pv = hostpath_claim(admin, namespace, "model-cache", tmp_path / "cache-pv")   # returns once the claim is Bound
    ...
    delete_volume(admin, pv)                                                      # the PV is cluster-scoped: the test removes it

The PV names its claim (claimRef) and the claim its PV (volumeName), with no StorageClass, so kube-controller-manager's
PV binder binds exactly these two, as it would a pre-provisioned volume; kube-scheduler then places pods that mount
the claim, and the played kubelet mounts the PV's hostPath (node_agent/kubelet.py).
Must not: be imported by product code.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def hostpath_claim(admin: Any, namespace: str, claim: str, folder: Path, *, size: str = "10Gi", access: str = "ReadWriteMany",
                   timeout: float = 60.0) -> str:
    """Create a hostPath PersistentVolume on `folder` and the claim `claim` bound to it; the PV's name."""
    pv = f"{namespace}-{claim}"[:253]
    folder.mkdir(parents=True, exist_ok=True)
    admin.post("/api/v1/persistentvolumes", {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": size}, "accessModes": [access], "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"}, "claimRef": {"namespace": namespace, "name": claim}},
    })
    admin.post(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
        "spec": {"accessModes": [access], "resources": {"requests": {"storage": size}}, "storageClassName": "", "volumeName": pv},
    })
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase = (admin.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}").get("status") or {}).get("phase")
        if phase == "Bound":
            return pv
        time.sleep(0.2)
    raise AssertionError(f"claim {namespace}/{claim} was not bound to {pv} after {timeout:.0f}s (is the persistentvolume-binder controller running?)")


def delete_volume(admin: Any, pv: str) -> None:
    from kompress_testing.cluster.client import ApiStatusError

    try:
        admin.delete(f"/api/v1/persistentvolumes/{pv}")
    except ApiStatusError as err:
        if err.code != 404:
            raise
