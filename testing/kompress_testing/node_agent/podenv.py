"""What a container's process gets: its command line and environment, as a kubelet would build them.

Owns: env (`value`, `valueFrom.secretKeyRef|configMapKeyRef|fieldRef`), `envFrom` (Secrets and
ConfigMaps, with `prefix`), `$(VAR)` expansion, the kubelet's errors for a missing Secret, ConfigMap or
key (the pod then waits in CreateContainerConfigError), the image's entrypoint when `command` is unset,
and the **path and address mapping** that stands in for a container's own filesystem and network:

- a value (env, command, args) that is a volume's `mountPath`, or lies under it, is rewritten to the
  pod's folder for that volume; the same for the container's `terminationMessagePath`;
- `0.0.0.0:PORT` is rewritten to `<podIP>:PORT` (in its own network namespace a pod's "all
  interfaces" is its one IP);
- `$KOMPRESS_TERMINATION_LOG` and `$KOMPRESS_PROGRESS_BIND` (kompress_api.worker_protocol) are set
  to the pod's termination-message file and `<podIP>:8080` when the pod doesn't set them, so the
  worker writes and serves where this node looks.

Must not: call the API (the caller fetches the Secrets and ConfigMaps named by `references`) or
start anything.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kompress_api.worker_protocol import ENV_PROGRESS_BIND, ENV_TERMINATION_LOG, PROGRESS_PORT, TERMINATION_LOG

ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class ContainerConfigError(Exception):
    """The container can't be created yet (CreateContainerConfigError); the kubelet retries."""


@dataclass(frozen=True)
class Ref:
    kind: str  # "secrets" or "configmaps"
    name: str


@dataclass
class PodPaths:
    """Where this pod's filesystem pieces live on the host."""

    mounts: dict[str, str] = field(default_factory=dict)  # mountPath -> host folder
    termination_log: str = ""
    pod_ip: str = ""

    def rewrite(self, value: str, termination_path: str = TERMINATION_LOG) -> str:
        if value == termination_path and self.termination_log:
            return self.termination_log
        for mount_path, host in sorted(self.mounts.items(), key=lambda item: -len(item[0])):
            if mount_path == host:
                continue
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return host + value[len(mount_path.rstrip("/")):]
        if value.startswith("0.0.0.0:") and self.pod_ip:
            return self.pod_ip + value[len("0.0.0.0"):]
        return value


def references(container: Mapping[str, Any]) -> set[Ref]:
    """The Secrets and ConfigMaps the container's environment reads."""
    refs = set()
    for source in container.get("envFrom") or []:
        if "secretRef" in source:
            refs.add(Ref("secrets", source["secretRef"]["name"]))
        if "configMapRef" in source:
            refs.add(Ref("configmaps", source["configMapRef"]["name"]))
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if "secretKeyRef" in value_from:
            refs.add(Ref("secrets", value_from["secretKeyRef"]["name"]))
        if "configMapKeyRef" in value_from:
            refs.add(Ref("configmaps", value_from["configMapKeyRef"]["name"]))
    return refs


def _data(kind: str, obj: Mapping[str, Any]) -> dict[str, str]:
    if kind == "secrets":
        return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (obj.get("data") or {}).items()}
    data = dict(obj.get("data") or {})
    data.update({k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (obj.get("binaryData") or {}).items()})
    return data


_KIND_WORDS = {"secrets": ("secret", "Secret"), "configmaps": ("configmap", "ConfigMap")}


def _lookup(objects: Mapping[Ref, Mapping[str, Any] | None], ref: Ref, namespace: str, optional: bool) -> dict[str, str] | None:
    obj = objects.get(ref)
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f'{_KIND_WORDS[ref.kind][0]} "{ref.name}" not found')
    return _data(ref.kind, obj)


def _field(pod: Mapping[str, Any], path: str) -> str:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"), "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"), "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"), "status.hostIP": status.get("hostIP"),
    }
    if path in simple:
        return simple[path] or ""
    match = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise ContainerConfigError(f"unsupported fieldRef {path!r}")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, anything else stays."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any], objects: Mapping[Ref, Mapping[str, Any] | None],
                  paths: PodPaths, base: Mapping[str, str]) -> dict[str, str]:
    """The process environment: `base` (the image's), then envFrom, then env, then the kompress conventions."""
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    env = dict(base)
    declared: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        for kind, key in (("secrets", "secretRef"), ("configmaps", "configMapRef")):
            if key in source:
                ref = source[key]
                data = _lookup(objects, Ref(kind, ref["name"]), namespace, bool(ref.get("optional")))
                for name, value in (data or {}).items():
                    if ENV_NAME.match(prefix + name):  # the kubelet skips invalid names (and says so in an Event)
                        declared[prefix + name] = value
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            declared[name] = expand(var.get("value") or "", {**env, **declared})
            continue
        value_from = var["valueFrom"]
        for kind, key in (("secrets", "secretKeyRef"), ("configmaps", "configMapKeyRef")):
            if key in value_from:
                ref = value_from[key]
                data = _lookup(objects, Ref(kind, ref["name"]), namespace, bool(ref.get("optional")))
                if data is None:
                    break
                if ref["key"] not in data:
                    if ref.get("optional"):
                        break
                    raise ContainerConfigError(f"couldn't find key {ref['key']} in {_KIND_WORDS[kind][1]} {namespace}/{ref['name']}")
                declared[name] = data[ref["key"]]
                break
        else:
            if "fieldRef" in value_from:
                declared[name] = _field(pod, value_from["fieldRef"]["fieldPath"])
            else:
                raise ContainerConfigError(f"env {name}: only secretKeyRef, configMapKeyRef and fieldRef are supported by the node agent")
    termination_path = container.get("terminationMessagePath") or TERMINATION_LOG
    env.update({name: paths.rewrite(value, termination_path) for name, value in declared.items()})
    if ENV_TERMINATION_LOG not in env and paths.termination_log:
        env[ENV_TERMINATION_LOG] = paths.termination_log
    if ENV_PROGRESS_BIND not in env and paths.pod_ip:
        env[ENV_PROGRESS_BIND] = f"{paths.pod_ip}:{PROGRESS_PORT}"
    return env


def command_line(container: Mapping[str, Any], entrypoints: Mapping[str, list[str]], env: Mapping[str, str],
                 paths: PodPaths) -> list[str]:
    """command + args (each with $(VAR) expanded and paths mapped); the image's entrypoint when command is unset."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        image = container.get("image") or ""
        entry = next((argv for pattern, argv in entrypoints.items() if pattern in image), None)
        if entry is None:
            raise ContainerConfigError(f"the node agent knows no entrypoint for image {image!r}: set command, or add the image to its entrypoint table")
        command = list(entry)
    termination_path = container.get("terminationMessagePath") or TERMINATION_LOG
    return [paths.rewrite(expand(part, env), termination_path) for part in command + args]
