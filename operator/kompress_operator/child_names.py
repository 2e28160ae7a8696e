"""How the operator names and recognises its children: the planning Job, the worker Job and their pods.

Owns: the child Jobs' names (deterministic from the parent's name and uid, so a restarted operator finds rather than
duplicates), their roles and container names, the labels and the owner annotation every child carries, the
controller ownerReference, and the one test of whether a child is ours (`is_owned_by`).
Must not: call the API, read a clock or the environment, or build anything beyond metadata (the Jobs are children.py's).
"""

from __future__ import annotations

from typing import Any

from kompress_api import v1alpha1 as api

# Labels every child carries: the first two are how the operator finds its Jobs and their pods.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kompress-operator"
LABEL_OWNER_UID = "kompress.dev/compressionjob-uid"
LABEL_ROLE = "kompress.dev/role"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
# Label values are at most 63 characters and a CompressionJob's name may be 253, so the name goes
# into an annotation; the uid (36 characters) is the label.
ANNOTATION_OWNER_NAME = "kompress.dev/compressionjob"
ROLE_PLAN = "plan"
ROLE_WORKER = "worker"

CONTAINER_NAME = "worker"
PLAN_CONTAINER_NAME = "planner"

# A Job's name is copied into a label on its pods (batch.kubernetes.io/job-name), so it has to be a
# valid label value: 63 characters at most.
MAX_JOB_NAME = 63
UID_CHARS = 5


def child_name(name: str, uid: str, role: str) -> str:
    """`<name>-<uid5>-<role>`, the name shortened so the whole stays within 63 characters.

    The uid part keeps two long names with the same prefix (or a re-created job of the same name)
    from colliding; being derived, not random, it lets a restarted operator find what it made.
    """
    suffix = f"-{uid.replace('-', '')[:UID_CHARS].lower()}-{role}"
    base = name[: MAX_JOB_NAME - len(suffix)].rstrip("-.")
    return base + suffix


def plan_job_name(cjob: api.CompressionJob) -> str:
    return child_name(parent_meta(cjob).name, parent_meta(cjob).uid, ROLE_PLAN)


def worker_job_name(cjob: api.CompressionJob) -> str:
    return child_name(parent_meta(cjob).name, parent_meta(cjob).uid, ROLE_WORKER)


def parent_meta(cjob: api.CompressionJob) -> api.ObjectMeta:
    """The CompressionJob's metadata, with the name, namespace and uid every child is made from."""
    meta = cjob.metadata
    if not (meta.name and meta.namespace and meta.uid):
        raise ValueError("a CompressionJob from the API has a name, a namespace and a uid")
    return meta


def owner_reference(cjob: api.CompressionJob) -> dict[str, Any]:
    """Makes the garbage collector delete the child with its CompressionJob (never the output)."""
    meta = parent_meta(cjob)
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": meta.name,
        "uid": meta.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_labels(cjob: api.CompressionJob, role: str) -> dict[str, str]:
    return {
        LABEL_NAME: "kompress",
        LABEL_COMPONENT: role,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_OWNER_UID: parent_meta(cjob).uid,
        LABEL_ROLE: role,
    }


def is_owned_by(child: dict[str, Any], uid: str | None) -> bool:
    """Whether `child` is controlled by the object with this uid: a Job by its CompressionJob (checked after a 409,
    and for every Job in the index), a pod by its Job. The one ownership test: labels can be copied, the
    controller ownerReference is what makes a child ours."""
    refs = (child.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)
