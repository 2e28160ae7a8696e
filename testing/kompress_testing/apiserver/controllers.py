"""The controllers a real cluster runs that API clients rely on: the garbage collector (ownerReferences,
Background/Foreground/Orphan propagation, the `orphan` and `foregroundDeletion` finalizers), the
namespace controller (a deleted namespace's content goes first, then the namespace), and CRD cleanup
(deleting a CRD deletes its objects, then the CRD and its API).

Owns: those reconciliations, run shortly after any write that may need them, until nothing changes.
Must not: run workloads (no Job controller, no kubelet: Jobs never get Pods here). Controller writes
bypass admission, as controllers' patches are trusted on a real cluster.
"""

from __future__ import annotations

import asyncio
import copy
from typing import TYPE_CHECKING, Any

from kompress_testing.apiserver.resources import ResourceType
from kompress_testing.apiserver.store import Key

if TYPE_CHECKING:
    from kompress_testing.apiserver.server import ApiServer

FOREGROUND, ORPHAN = "foregroundDeletion", "orphan"
CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io"


class Controllers:
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self._handle: asyncio.TimerHandle | None = None

    def schedule(self) -> None:
        if self._handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._handle = loop.call_later(self.server.gc_delay, self._run)

    def _run(self) -> None:
        self._handle = None
        for _ in range(50):  # cascades settle in a few passes; bounded so a bug cannot spin forever
            if not self._pass():
                break

    def _type_of(self, storage: tuple[str, str]) -> ResourceType | None:
        candidates = [t for t in self.server.registry.all() if t.storage == storage and t.group == storage[0]]
        return candidates[0] if candidates else None

    def _pass(self) -> bool:
        """One pass of the controllers. Returns whether anything changed."""
        changed = False
        # Read-only view: objects are copied only when a controller writes them (_patch, delete_one).
        everything = self.server.store.peek_items()
        types: dict[tuple[str, str], ResourceType | None] = {}
        uids = {obj["metadata"]["uid"]: (key, obj) for key, obj in everything}
        dependents: dict[str, list[tuple[Key, dict[str, Any]]]] = {}
        for key, obj in everything:
            for ref in obj["metadata"].get("ownerReferences") or []:
                dependents.setdefault(ref.get("uid", ""), []).append((key, obj))

        for key, _ in everything:
            # The current version: an earlier step of this pass may have changed or removed it.
            obj = self.server.store.peek(*key)
            if obj is None:
                continue
            if key[0] not in types:
                types[key[0]] = self._type_of(key[0])
            rtype = types[key[0]]
            if rtype is None:
                continue
            meta = obj["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            deleting = bool(meta.get("deletionTimestamp"))
            uid = meta["uid"]

            # Orphan: detach dependents, then let the owner go.
            if deleting and ORPHAN in finalizers:
                for dep_key, dep in dependents.get(uid, []):
                    fresh = self.server.store.peek(*dep_key)
                    if fresh is None:
                        continue
                    refs = [r for r in fresh["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
                    self._patch(dep_key, fresh, lambda o, refs=refs: _set_or_drop(o["metadata"], "ownerReferences", refs))
                self._patch(key, obj, lambda o: _drop_finalizer(o, ORPHAN))
                changed = True
                continue

            # Foreground: delete dependents first; the owner goes when none is left.
            if deleting and FOREGROUND in finalizers:
                live = [(k, d) for k, d in dependents.get(uid, []) if self.server.store.peek(*k) is not None]
                for dep_key, dep in live:
                    dep_type = self._type_of(dep_key[0])
                    if dep_type and not dep["metadata"].get("deletionTimestamp"):
                        self.server.delete_one(dep_type, dep_key[1], dep_key[2], {"propagationPolicy": "Foreground"})
                        changed = True
                if not live:
                    self._patch(key, obj, lambda o: _drop_finalizer(o, FOREGROUND))
                    changed = True
                continue

            # Namespace termination: delete the content, then the namespace.
            if deleting and rtype.plural == "namespaces" and not rtype.group:
                content = [(k, o) for k, o in everything if k[1] == meta["name"] and self.server.store.peek(*k) is not None]
                for content_key, content_obj in content:
                    content_type = self._type_of(content_key[0])
                    if content_type and not content_obj["metadata"].get("deletionTimestamp"):
                        self.server.delete_one(content_type, content_key[1], content_key[2], {"propagationPolicy": "Background"})
                        changed = True
                if not content and (obj.get("spec") or {}).get("finalizers"):
                    self._patch(key, obj, lambda o: o["spec"].pop("finalizers", None))
                    changed = True
                continue

            # CRD deletion: remove every custom resource of it, then the CRD.
            if deleting and CRD_CLEANUP in finalizers and rtype.plural == "customresourcedefinitions":
                storage = (obj["spec"]["group"], obj["spec"]["names"]["plural"])
                instances = [(k, o) for k, o in everything if k[0] == storage and self.server.store.peek(*k) is not None]
                cr_type = self._type_of(storage)
                for instance_key, instance in instances:
                    if cr_type and not instance["metadata"].get("deletionTimestamp"):
                        self.server.delete_one(cr_type, instance_key[1], instance_key[2], {})
                        changed = True
                if not instances:
                    self._patch(key, obj, lambda o: _drop_finalizer(o, CRD_CLEANUP))
                    changed = True
                continue

            # Background: a dependent whose owners are all gone is deleted; dangling references are dropped.
            refs = meta.get("ownerReferences") or []
            if refs and not deleting:
                alive = [r for r in refs if r.get("uid") in uids and self.server.store.peek(*uids[r["uid"]][0]) is not None
                         and not _is_being_foreground_deleted(self.server.store.peek(*uids[r["uid"]][0]))]
                gone = [r for r in refs if r.get("uid") not in uids or self.server.store.peek(*uids[r["uid"]][0]) is None]
                if not alive and gone and len(gone) == len(refs):
                    self.server.delete_one(rtype, key[1], key[2], {"propagationPolicy": "Background"})
                    changed = True
                elif gone and alive:
                    self._patch(key, obj, lambda o, alive=alive: _set_or_drop(o["metadata"], "ownerReferences", alive))
                    changed = True
        return changed

    def _patch(self, key: Key, obj: dict[str, Any], change: Any) -> None:
        """A controller's write: bypasses admission, keeps finalizer/deletion semantics."""
        fresh = self.server.store.get(*key)
        if fresh is None:
            return
        new = copy.deepcopy(fresh)
        change(new)
        if new == fresh:
            return
        namespace_finalizers = key[0] == ("", "namespaces") and (new.get("spec") or {}).get("finalizers")
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") and not namespace_finalizers:
            rtype = self._type_of(key[0])
            if rtype is not None:
                self.server.remove(rtype, key)
                return
        self.server.store.write(key, new, "MODIFIED")


def _drop_finalizer(obj: dict[str, Any], finalizer: str) -> None:
    finalizers = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]
    _set_or_drop(obj["metadata"], "finalizers", finalizers)


def _set_or_drop(mapping: dict[str, Any], key: str, value: list[Any]) -> None:
    if value:
        mapping[key] = value
    else:
        mapping.pop(key, None)


def _is_being_foreground_deleted(obj: dict[str, Any] | None) -> bool:
    return bool(obj) and FOREGROUND in (obj["metadata"].get("finalizers") or []) and bool(obj["metadata"].get("deletionTimestamp"))  # type: ignore[index]
