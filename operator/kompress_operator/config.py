"""The operator's settings, from environment variables and command-line flags.

Owns: every knob a platform team can turn (watched namespaces, default worker image, GPU resource
name, worker ServiceAccount, log format, intervals, ports), their defaults, and parsing them.
Flags win over environment variables (the chart sets variables; a developer types flags).
Must not: read anything but the mapping and argv it is given; talk to the API.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

from kompress_api.v1alpha1 import DEFAULT_GPU_RESOURCE
from kompress_api.worker_protocol import PROGRESS_PORT

# The chart (charts/kompress/templates/deployment.yaml) sets these names; every other field is
# KOMPRESS_<FIELD> without the unit suffix, e.g. KOMPRESS_RESYNC_INTERVAL.
ENV_PREFIX = "KOMPRESS_"


@dataclass(frozen=True)
class OperatorConfig:
    # Namespaces to watch; empty means every namespace (cluster-wide).
    watch_namespaces: tuple[str, ...] = ()
    # The image of the worker and the planning pod when spec.image is unset.
    worker_image: str = "ghcr.io/kompress/kompress-job:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    gpu_resource_name: str = DEFAULT_GPU_RESOURCE
    # Worker and planning pods run as this ServiceAccount unless spec.scheduling.serviceAccountName says
    # otherwise. It needs no Kubernetes rights; it exists for workload identity (IRSA, GKE, Azure).
    worker_service_account: str = ""
    log_format: str = "text"
    verbose: bool = False
    # How often running jobs are re-read: progress is polled and pending timeouts checked this often.
    resync_interval_s: float = 10.0
    # A worker's /progress endpoint must answer within this, or the last progress stands.
    progress_timeout_s: float = 2.0
    progress_port: int = PROGRESS_PORT
    # Liveness/readiness (Kopf's probe) and Prometheus metrics; 0 turns either off.
    health_port: int = 8080
    metrics_port: int = 9090
    # The planning pod is small and short-lived: config.json and a meta-device model.
    plan_cpu: str = "1"
    plan_memory: str = "2Gi"
    plan_ttl_seconds: int = 3600
    plan_active_deadline_seconds: int = 900
    # Used only when neither the spec nor the plan gives a figure.
    default_memory: str = "32Gi"
    default_scratch: str = "100Gi"
    default_shm: str = "16Gi"
    # The model cache (chart cache.*): a ReadWriteMany claim in each job's namespace mounted by planning and worker
    # pods; empty: no cache unless spec.model.cache.claimName names one. Eviction keeps it under cache_max_bytes (0: the volume).
    cache_claim: str = ""
    cache_max_bytes: int = 0
    # Path of a kubeconfig; empty: in-cluster config, else $KUBECONFIG / ~/.kube/config.
    kubeconfig: str = ""

    @property
    def clusterwide(self) -> bool:
        return not self.watch_namespaces


# Flag help per field. The dataclass's defaults are the documented defaults.
_HELP: dict[str, str] = {
    "watch_namespaces": "comma-separated namespaces to watch (default: all namespaces)",
    "worker_image": "worker and planning image when spec.image is unset",
    "image_pull_policy": "imagePullPolicy of the worker and planning pods",
    "gpu_resource_name": "extended resource name of a GPU when spec.resources.gpuResourceName is unset",
    "worker_service_account": "ServiceAccount of the worker and planning pods (default: the namespace's default)",
    "log_format": "text or json",
    "verbose": "debug logging",
    "resync_interval_s": "seconds between re-reads of unfinished jobs (progress polling, pending timeouts)",
    "progress_timeout_s": "seconds to wait for a worker's /progress answer",
    "progress_port": "port of the worker's progress endpoint",
    "health_port": "port of the liveness/readiness probe /healthz (0: off)",
    "metrics_port": "port of the Prometheus /metrics endpoint (0: off)",
    "plan_cpu": "CPU of the planning pod",
    "plan_memory": "memory of the planning pod",
    "plan_ttl_seconds": "seconds a finished planning Job is kept",
    "plan_active_deadline_seconds": "seconds a planning Job may run",
    "default_memory": "worker memory when neither spec nor plan gives one",
    "default_scratch": "worker scratch when neither spec nor plan gives one",
    "default_shm": "size of /dev/shm when spec.resources.shm is unset",
    "cache_claim": "ReadWriteMany PersistentVolumeClaim of the model cache, mounted by planning and worker pods (default: none)",
    "cache_max_bytes": "size limit of the model cache for least-recently-used eviction (0: the volume's size)",
    "kubeconfig": "path of a kubeconfig (default: in-cluster, else $KUBECONFIG)",
}


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper().removesuffix("_S")


def _convert(name: str, raw: str, default: object) -> object:
    if name == "watch_namespaces":
        return tuple(ns.strip() for ns in raw.split(",") if ns.strip())
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{env_name(name)}={raw!r} is not a boolean (true/false)")
    try:
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ValueError(f"{env_name(name)}={raw!r} is not a number") from None
    return raw


def _validate(config: OperatorConfig) -> OperatorConfig:
    if config.log_format not in ("text", "json"):
        raise ValueError(f"log format must be text or json, not {config.log_format!r}")
    if config.resync_interval_s <= 0 or config.progress_timeout_s <= 0:
        raise ValueError("intervals and timeouts must be positive")
    if not config.worker_image:
        raise ValueError("a default worker image is required")
    return config


def from_env(environ: Mapping[str, str]) -> OperatorConfig:
    """Settings from KOMPRESS_* variables, e.g. KOMPRESS_WATCH_NAMESPACES=ml,research."""
    defaults = OperatorConfig()
    values = {}
    for f in fields(OperatorConfig):
        raw = environ.get(env_name(f.name))
        if raw is not None:
            values[f.name] = _convert(f.name, raw, getattr(defaults, f.name))
    return _validate(replace(defaults, **values))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kompress-operator", description="The Kompress operator: CompressionJob -> planning Job -> GPU Job -> status.")
    for f in fields(OperatorConfig):
        flag = "--" + f.name.removesuffix("_s").replace("_", "-")
        if f.type in ("bool",):
            parser.add_argument(flag, dest=f.name, action="store_true", default=None, help=_HELP[f.name])
        else:
            parser.add_argument(flag, dest=f.name, default=None, help=f"{_HELP[f.name]} (env {env_name(f.name)})")
    return parser


def load(argv: Sequence[str], environ: Mapping[str, str]) -> OperatorConfig:
    """Environment first, then flags on top."""
    config = from_env(environ)
    args = build_parser().parse_args(list(argv))
    values = {}
    for f in fields(OperatorConfig):
        raw = getattr(args, f.name)
        if raw is None:
            continue
        values[f.name] = raw if isinstance(raw, bool) else _convert(f.name, raw, getattr(config, f.name))
    return _validate(replace(config, **values))


__all__ = ["OperatorConfig", "from_env", "load", "build_parser", "env_name"]
