"""The emulated kube-apiserver: KMock's Kubernetes scaffold with the semantics of a real API server.

Owns: turning each HTTP request into an API operation (get, list, watch, create, update, patch,
delete, deletecollection, on main resources and `/status`) with the behaviour of kube-apiserver that
clients depend on: resourceVersion/uid/creationTimestamp/generation, namespaces from the URL,
generateName, optimistic concurrency (409), status subresource isolation, CRD schema admission
(prune, default, validate, CEL, fieldValidation), finalizers and deletionTimestamp, deletion
propagation and ownerReference garbage collection, namespace termination, watches from a
resourceVersion with selectors and bookmarks, Tables for `kubectl get`, discovery, OpenAPI v3 for
kubectl, bearer-token authentication and RBAC. Must not: run workloads (no scheduler, no kubelet, no
Job controller: Jobs never create Pods here).

KMock's DSL still comes first: a reaction a test adds (`server['patch', kmock.resource(...)] << 500`)
answers matching requests instead of the emulated server, which is how tests inject faults. We do not
install KubernetesScaffold's own fallback reactions: this class answers everything they would.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import random
import re
import traceback
import uuid
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import rendering

from kompress_testing.apiserver import errors as E
from kompress_testing.apiserver import builtins, openapi, patching, podlogs, rbac, request_info, selectors, tables, watch
from kompress_testing.apiserver.controllers import CRD_CLEANUP, FOREGROUND, ORPHAN, Controllers
from kompress_testing.apiserver.request_info import Call
from kompress_testing.apiserver.resources import (Registry, ResourceType, crd_problems, crd_resource_types,
                                                  crd_status, schema_hash)
from kompress_testing.apiserver.store import Key, Store

VERSION_INFO = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0", "gitCommit": "kompress-testing-emulated-apiserver",
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.0", "compiler": "gc",
    "platform": "linux/amd64", "emulationMajor": "1", "emulationMinor": "32",
}
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
ADMIN_TOKEN = "kompress-admin-token"
GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
RBAC_GROUP = "rbac.authorization.k8s.io"


def now_iso(seconds_ahead: int = 0) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds_ahead)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> aiohttp.web.Response:
    return aiohttp.web.Response(status=status, body=json.dumps(data, separators=(",", ":")).encode(),
                                content_type="application/json", headers=headers or {})


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.setdefault("metadata", {})


def _without_meta(obj: dict[str, Any], drop_status: bool) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "metadata" and not (drop_status and k == "status")}


def _random_suffix() -> str:
    return "".join(random.choice(GENERATE_NAME_ALPHABET) for _ in range(5))


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesScaffold):
    """A kube-apiserver for tests. Serve it with `runner.ServerThread` (tests) or `runner.serve()` (in a loop)."""

    rbac_enforced: bool = False
    bookmark_interval: float = 60.0
    gc_delay: float = 0.01
    event_log_size: int = 10000
    version_info: dict[str, str] = attrs.field(factory=lambda: dict(VERSION_INFO))
    address: str = "127.0.0.1"

    registry: Registry = attrs.field(factory=Registry.builtin, init=False)
    store: Store = attrs.field(init=False)
    authenticator: rbac.Authenticator = attrs.field(factory=rbac.Authenticator, init=False)
    decisions: list[rbac.Decision] = attrs.field(factory=list, init=False)
    controllers: Controllers = attrs.field(init=False)
    _openapi_cache: dict[Any, Any] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        # Deliberately not calling KubernetesScaffold's: its fallback reactions would answer discovery
        # and unknown URLs in KMock's way. User reactions still take precedence (see _serve).
        self.store = Store(self.event_log_size, self.registry.storage_version)
        self.controllers = Controllers(self)
        self.authenticator.tokens[ADMIN_TOKEN] = rbac.ADMIN
        namespaces = self.registry.get("", "v1", "namespaces")
        assert namespaces is not None
        for name in DEFAULT_NAMESPACES:
            obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}
            self._stamp_new(namespaces, obj)
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            self.store.write((namespaces.storage, None, name), obj, "ADDED")

    # ----------------------------------------------------------------------------------------------
    # Public helpers for tests
    # ----------------------------------------------------------------------------------------------

    @property
    def objects(self) -> kmock.ObjectsArray:
        """Every object's versions, as in KMock: `server.objects['kompress.dev/v1alpha1/compressionjobs', 'ns', 'x'].history`."""
        return self.store.objects

    def add_token(self, token: str, identity: rbac.Identity) -> str:
        self.authenticator.tokens[token] = identity
        return token

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token that authenticates as system:serviceaccount:NAMESPACE:NAME."""
        return self.add_token(f"sa-{namespace}-{name}-{uuid.uuid5(uuid.NAMESPACE_URL, namespace + '/' + name).hex[:12]}",
                              rbac.Identity.service_account(namespace, name))

    @property
    def internal_errors(self) -> list[Exception]:
        """Exceptions the emulator raised while serving (bugs: each was answered with a 500)."""
        return list(self._errors[-1]) if self._errors else []

    @property
    def denied(self) -> list[rbac.Decision]:
        return [d for d in self.decisions if not d.allowed]

    def check(self, user: rbac.Identity | str, verb: str, resource: str, group: str = "", namespace: str = "",
              name: str = "", subresource: str = "") -> rbac.Decision:
        """Would RBAC allow this? The decision carries the binding and role that allow it, or the 403 text.
        A string user may be `system:serviceaccount:NS:NAME`."""
        if isinstance(user, str):
            match = re.fullmatch(r"system:serviceaccount:([^:]+):([^:]+)", user)
            user = rbac.Identity.service_account(*match.groups()) if match else rbac.Identity(user, ("system:authenticated",))
        attributes = rbac.Attributes(user, verb, True, api_group=group, resource=resource, subresource=subresource,
                                     namespace=namespace, name=name)
        return self.policy().authorize(attributes)

    def policy(self) -> rbac.Policy:
        def of(plural: str) -> list[dict[str, Any]]:
            return [obj for _, obj in self.store.items((RBAC_GROUP, plural))]

        return rbac.Policy(of("roles"), of("clusterroles"), of("rolebindings"), of("clusterrolebindings"))

    def install_crd(self, crd: dict[str, Any]) -> dict[str, Any]:
        """Create a CRD without HTTP (for fixtures): same path as POST, as the admin."""
        rtype = self.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert rtype is not None
        return self._create(rtype, None, copy.deepcopy(crd), {})

    # ----------------------------------------------------------------------------------------------
    # HTTP entry: KMock's RawHandler.__call__, with Kubernetes' own URL parsing
    # ----------------------------------------------------------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        params = dict(raw.query)
        info = request_info.parse(raw.method, raw.path, params)
        try:
            data = json.loads(body.decode("utf-8")) if body else None
        except ValueError:
            data = None
        resource = kmock.resource(info.group, info.version, info.resource) if info.resource_request else None
        action = {"list": kmock.action.LIST, "watch": kmock.action.WATCH, "get": kmock.action.FETCH,
                  "create": kmock.action.CREATE, "patch": kmock.action.UPDATE, "delete": kmock.action.DELETE}.get(info.verb)
        request = rendering.Request(
            id=len(self._requests), raw_request=raw, url=raw.url, method=raw.method, params=params,
            headers=dict(raw.headers), cookies=dict(raw.cookies), body=body, text=body.decode("utf-8", "replace"),
            data=data, action=action if info.resource_request else None, resource=resource,
            namespace=info.namespace, name=info.name, subresource=info.subresource or None,
        )
        self._requests.append(request)
        call = Call(raw=raw, request=request, info=info, params=params, body=body)
        try:
            return await self._serve(call)
        except E.ApiError as exc:
            return _json(exc.status(), exc.code, exc.headers)
        except rendering.StreamingError as exc:  # a user reaction's stream failed midway
            raise exc.__cause__ or exc
        except ConnectionError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in the emulator: answer 500 like a server would
            if self._errors:
                self._errors[-1].append(exc)
            status = E.ApiError(500, "InternalError", f"Internal error occurred: {exc!r}",
                                {"causes": [{"message": traceback.format_exc()}]}).status()
            return _json(status, 500)

    async def _serve(self, call: Call) -> aiohttp.web.StreamResponse:
        self._authenticate(call)
        self._authorize(call)
        # A test's own reactions answer first (fault injection); everything else is the emulated server.
        try:
            return await kmock.RawHandler._handle(self, call.request)
        except NotImplementedError:
            pass
        return await self._dispatch(call)

    # ----------------------------------------------------------------------------------------------
    # Authentication and authorization
    # ----------------------------------------------------------------------------------------------

    def _authenticate(self, call: Call) -> None:
        identity = self.authenticator.identify(call.raw.headers.get("Authorization"), E.unauthorized)
        impersonate = call.raw.headers.get("Impersonate-User")
        if impersonate:
            sa = re.fullmatch(r"system:serviceaccount:([^:]+):([^:]+)", impersonate)
            if self.rbac_enforced and not identity.is_admin:
                target = rbac.Attributes(identity, "impersonate", True, resource="serviceaccounts" if sa else "users",
                                         namespace=sa.group(1) if sa else "", name=sa.group(2) if sa else impersonate)
                decision = self.policy().authorize(target)
                self.decisions.append(decision)
                if not decision.allowed:
                    raise E.forbidden_request(target.resource, "", target.name, decision.reason)
            groups = tuple(call.raw.headers.getall("Impersonate-Group", []))
            identity = rbac.Identity.service_account(*sa.groups()) if sa and not groups else \
                rbac.Identity(impersonate, groups + ("system:authenticated",))
        call.user = identity

    def _authorize(self, call: Call) -> None:
        info = call.info
        attrs_ = rbac.Attributes(
            user=call.user, verb=info.verb, resource_request=info.resource_request, path=info.path,
            api_group=info.group, resource=info.resource, subresource=info.subresource,
            namespace=info.namespace or "", name=info.name or "")
        if not self.rbac_enforced:
            return
        if call.user.is_admin:
            self.decisions.append(rbac.Decision(attrs_, True, "system:masters"))
            return
        if not info.resource_request and info.path.startswith(rbac.OPEN_PATH_PREFIXES):
            return
        if (info.group, info.resource) in rbac.SELF_REVIEWS and info.verb == "create" and call.user is not rbac.ANONYMOUS:
            return  # the bootstrap ClusterRole system:basic-user grants these to everyone authenticated
        decision = self.policy().authorize(attrs_)
        self.decisions.append(decision)
        if not decision.allowed:
            if not info.resource_request:
                raise E.forbidden_request("", "", "", decision.reason)
            raise E.forbidden_request(info.resource, info.group, info.name or "", decision.reason)

    # ----------------------------------------------------------------------------------------------
    # Routing
    # ----------------------------------------------------------------------------------------------

    async def _dispatch(self, call: Call) -> aiohttp.web.StreamResponse:
        info = call.info
        if not info.resource_request:
            return self._non_resource(call)
        rtype = self.registry.get(info.group, info.version, info.resource)
        if rtype is None:
            raise E.endpoint_not_found()
        if (rtype.group, rtype.plural, info.subresource, info.verb) == ("", "pods", "log", "get"):
            return await podlogs.serve(self, call, self._current(rtype, info.namespace, info.name or ""))
        if info.subresource and info.subresource != "status":
            raise E.endpoint_not_found()
        if info.subresource == "status" and not rtype.has_status:
            raise E.endpoint_not_found()
        if not rtype.namespaced and info.namespace is not None:
            raise E.endpoint_not_found()
        if rtype.namespaced and info.verb in ("create", "update", "patch", "delete", "get") and info.namespace is None:
            raise E.endpoint_not_found()
        if info.subresource and info.verb not in ("get", "update", "patch"):
            raise E.method_not_allowed(info.verb, rtype.plural, rtype.group)
        if (rtype.group, rtype.plural) in (("authorization.k8s.io", "selfsubjectaccessreviews"),
                                           ("authorization.k8s.io", "subjectaccessreviews")) and info.verb == "create":
            return self._access_review(call, rtype)
        if (rtype.group, rtype.plural) == ("authorization.k8s.io", "selfsubjectrulesreviews") and info.verb == "create":
            return self._rules_review(call, rtype)
        verb = info.verb
        if verb == "watch":
            return await watch.serve(self, call, rtype)
        if verb == "list":
            return self._list(call, rtype)
        if verb == "get":
            obj = self._current(rtype, info.namespace, info.name or "")
            return self._object_response(call, rtype, obj)
        if verb == "create":
            body = call.json_body()
            if not isinstance(body, dict):
                raise E.bad_request("the body of the request must be a JSON object")
            created = self._create(rtype, info.namespace, body, call.params, call=call)
            return self._object_response(call, rtype, created, 201, self._warnings(call))
        if verb == "update":
            updated = self._replace(rtype, info.namespace, info.name or "", call)
            return self._object_response(call, rtype, updated, 200, self._warnings(call))
        if verb == "patch":
            patched, created = self._patch(rtype, info.namespace, info.name or "", call)
            return self._object_response(call, rtype, patched, 201 if created else 200, self._warnings(call))
        if verb == "delete":
            return self._delete(call, rtype)
        if verb == "deletecollection":
            return self._delete_collection(call, rtype)
        raise E.method_not_allowed(verb, rtype.plural, rtype.group)

    def _non_resource(self, call: Call) -> aiohttp.web.StreamResponse:
        info = call.info
        path = info.path.rstrip("/") or "/"
        if call.raw.method != "GET":
            raise E.endpoint_not_found()
        if path == "/":
            paths = {"/api", "/api/v1", "/apis", "/version", "/openapi/v3", "/healthz", "/livez", "/readyz"}
            for group, versions in self.registry.groups().items():
                if group:
                    paths.add(f"/apis/{group}")
                    paths.update(f"/apis/{group}/{v}" for v in versions)
            return _json({"paths": sorted(paths)})
        if path == "/version":
            return _json(self.version_info)
        if path in ("/healthz", "/livez", "/readyz"):
            return aiohttp.web.Response(text="ok", content_type="text/plain")
        if path == "/api":
            return _json(self.registry.api_versions(self.address))
        if path == "/apis":
            return _json(self.registry.api_group_list())
        parts = info.parts
        if path.startswith("/openapi/v3"):
            return self._openapi(path)
        if parts[0] == "api" and len(parts) == 2:
            doc = self.registry.api_resource_list("", parts[1])
        elif parts[0] == "apis" and len(parts) == 2:
            doc = self.registry.api_group(parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            doc = self.registry.api_resource_list(parts[1], parts[2])
        else:
            doc = None
        if doc is None:
            raise E.endpoint_not_found()
        return _json(doc)

    def _openapi(self, path: str) -> aiohttp.web.StreamResponse:
        generation = self.registry.generation
        if self._openapi_cache.get("generation") != generation:
            self._openapi_cache = {"generation": generation, "index": openapi.index(self.registry), "docs": {}}
        if path == "/openapi/v3":
            return _json(self._openapi_cache["index"])
        key = path[len("/openapi/v3/"):]
        if key not in self._openapi_cache["docs"]:
            parts = key.split("/")
            if parts[0] == "api" and len(parts) == 2:
                doc = openapi.group_version_document(self.registry, "", parts[1])
            elif parts[0] == "apis" and len(parts) == 3:
                doc = openapi.group_version_document(self.registry, parts[1], parts[2])
            else:
                doc = None
            if doc is None:
                raise E.endpoint_not_found()
            self._openapi_cache["docs"][key] = doc
        return _json(self._openapi_cache["docs"][key], headers={"Etag": f'"{schema_hash(self._openapi_cache["docs"][key])}"'})

    # ----------------------------------------------------------------------------------------------
    # Reading
    # ----------------------------------------------------------------------------------------------

    def _key(self, rtype: ResourceType, namespace: str | None, name: str) -> Key:
        return (rtype.storage, namespace if rtype.namespaced else None, name)

    def _current(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.store.get(*self._key(rtype, namespace, name))
        if obj is None:
            raise E.not_found(rtype.plural, rtype.group, name)
        return obj

    def present(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """A stored object in the shape of the requested group/version."""
        if rtype.group == "events.k8s.io":
            return builtins.core_event_to_v1(obj)
        obj["apiVersion"] = rtype.api_version
        obj["kind"] = rtype.kind
        return obj

    def _object_response(self, call: Call, rtype: ResourceType, obj: dict[str, Any], status: int = 200,
                         headers: dict[str, str] | None = None) -> aiohttp.web.StreamResponse:
        obj = self.present(rtype, obj)
        accept = call.raw.headers.get("Accept")
        if tables.wants_table(accept) and status == 200:
            table = tables.table(rtype, [obj], obj["metadata"].get("resourceVersion", ""),
                                 call.params.get("includeObject", "Metadata"), version=tables.table_version(accept))
            return _json(table, status, headers)
        return _json(obj, status, headers)

    def _matching(self, call: Call, rtype: ResourceType) -> list[dict[str, Any]]:
        match = selectors.matcher(call.params.get("labelSelector"), call.params.get("fieldSelector"), rtype.plural, rtype.custom)
        namespace = call.info.namespace if rtype.namespaced else None
        return [obj for _, obj in self.store.items(rtype.storage, namespace) if match(obj)]

    def _list(self, call: Call, rtype: ResourceType) -> aiohttp.web.StreamResponse:
        objs = self._matching(call, rtype)
        if call.info.name:
            objs = [o for o in objs if o["metadata"]["name"] == call.info.name]
        start = 0
        if call.params.get("continue"):
            try:
                token = json.loads(base64.b64decode(call.params["continue"]))
                start = int(token["start"])
            except (ValueError, KeyError, TypeError) as exc:
                raise E.bad_request(f"continue key is not valid: {exc}") from exc
        limit = int(call.params.get("limit") or 0)
        page = objs[start:start + limit] if limit else objs[start:]
        more = bool(limit) and start + limit < len(objs)
        continue_token = base64.b64encode(json.dumps({"rv": self.store.rv, "start": start + limit}).encode()).decode() if more else None
        items = [self.present(rtype, o) for o in page]
        accept = call.raw.headers.get("Accept")
        if tables.wants_table(accept):
            return _json(tables.table(rtype, items, str(self.store.rv), call.params.get("includeObject", "Metadata"),
                                      version=tables.table_version(accept), continue_token=continue_token))
        if not rtype.custom and rtype.group != "events.k8s.io":
            # Typed lists of built-ins carry kind/apiVersion on the list only, as a real server's do.
            items = [{k: v for k, v in item.items() if k not in ("apiVersion", "kind")} for item in items]
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.rv)}
        if continue_token:
            metadata["continue"] = continue_token
            metadata["remainingItemCount"] = len(objs) - start - limit
        return _json({"apiVersion": rtype.api_version, "kind": rtype.list_kind, "metadata": metadata, "items": items})

    # ----------------------------------------------------------------------------------------------
    # Writing: shared pieces
    # ----------------------------------------------------------------------------------------------

    def _field_validation(self, params: dict[str, str]) -> str:
        value = params.get("fieldValidation") or "Warn"
        if value not in ("Ignore", "Warn", "Strict"):
            raise E.bad_request(f'fieldValidation parameter unsupported: "{value}" (supported values: "Ignore", "Warn", "Strict")')
        return value

    def _warnings(self, call: Call) -> dict[str, str]:
        return E.Warnings(call.warnings).header()

    def _stamp_new(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        meta = _meta(obj)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"):
            meta.pop(key, None)
        if rtype.tracks_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)

    def _validate_metadata(self, rtype: ResourceType, obj: dict[str, Any]) -> list[E.FieldError]:
        meta = obj["metadata"]
        problems: list[E.FieldError] = []
        name = meta.get("name", "")
        if rtype.plural == "namespaces":
            if not DNS_LABEL.match(name) or len(name) > 63:
                problems.append(E.invalid("metadata.name", name, "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                                          "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
                                          "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"))
        elif rtype.custom or rtype.group not in (RBAC_GROUP,):
            if not DNS_SUBDOMAIN.match(name) or len(name) > 253:
                problems.append(E.invalid("metadata.name", name, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                                          "characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
                                          "'example.com', regex used for validation is "
                                          "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"))
        elif name in (".", "..") or "/" in name or "%" in name:
            problems.append(E.invalid("metadata.name", name, 'may not contain "/" or "%"'))
        for key, value in (meta.get("labels") or {}).items():
            label_name = key.rsplit("/", 1)[-1]
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                problems.append(E.invalid("metadata.labels", value, "a valid label must be an empty string or consist of alphanumeric "
                                          "characters, '-', '_' or '.', and must start and end with an alphanumeric character"))
            if len(label_name) > 63 or not LABEL_NAME.match(label_name):
                problems.append(E.invalid("metadata.labels", key, "name part must consist of alphanumeric characters, '-', '_' or '.', "
                                          "and must start and end with an alphanumeric character"))
        for key, value in (meta.get("annotations") or {}).items():
            if not isinstance(value, str):
                problems.append(E.FieldError("TypeInvalid", "metadata.annotations", "must be a string", value))
        return problems

    def _admit(self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, params: dict[str, str],
               call: Call | None, name: str) -> dict[str, Any]:
        """Schema admission of custom resources, metadata checks of everything; raises 400/422."""
        problems = self._validate_metadata(rtype, obj)
        if rtype.schema is not None:
            admission = rtype.schema.admit(obj, old)
            directive = self._field_validation(params)
            if admission.unknown_fields:
                if directive == "Strict":
                    decoding = call is None or call.info.verb in ("create", "update")  # PATCH reports it without the prefix
                    prefix = f'{rtype.kind} in version "{rtype.version}" cannot be handled as a {rtype.kind}: ' if decoding else ""
                    raise E.bad_request(prefix + admission.strict_message())
                if directive == "Warn" and call is not None:
                    call.warnings = [f'unknown field "{p}"' for p in admission.unknown_fields]
            obj = admission.object
            problems += admission.errors
        if problems:
            raise E.invalid_object(rtype.kind, rtype.group, name, problems)
        return obj

    def _namespace_ready(self, rtype: ResourceType, namespace: str | None) -> None:
        if not rtype.namespaced:
            return
        ns_type = self.registry.get("", "v1", "namespaces")
        assert ns_type is not None
        ns = self.store.get(ns_type.storage, None, namespace or "")
        if ns is None:
            raise E.not_found("namespaces", "", namespace or "")
        if ns["metadata"].get("deletionTimestamp"):
            raise E.forbidden_request(rtype.plural, rtype.group, "",
                                      f"unable to create new content in namespace {namespace} because it is being terminated")

    # ----------------------------------------------------------------------------------------------
    # Create
    # ----------------------------------------------------------------------------------------------

    def _create(self, rtype: ResourceType, namespace: str | None, obj: dict[str, Any], params: dict[str, str],
                call: Call | None = None) -> dict[str, Any]:
        if rtype.group == "events.k8s.io":
            obj = builtins.v1_event_to_core(obj)
        meta = _meta(obj)
        if not isinstance(meta, dict):
            raise E.bad_request("metadata must be an object")
        if obj.get("kind") and obj["kind"] != rtype.kind and rtype.group != "events.k8s.io":
            raise E.bad_request(f'the kind in the data ({obj["kind"]}) does not match the expected kind ({rtype.kind})')
        if rtype.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise E.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + _random_suffix()
        name = meta.get("name") or ""
        if not name:
            raise E.invalid_object(rtype.kind, rtype.group, "", [E.required("metadata.name", "name or generateName is required")])
        if meta.get("resourceVersion"):
            raise E.ApiError(500, "InternalError", "Internal error occurred: resourceVersion should not be set on objects to be created",
                             {"causes": [{"message": "resourceVersion should not be set on objects to be created"}]})
        self._namespace_ready(rtype, namespace)
        obj["apiVersion"] = rtype.api_version if rtype.group != "events.k8s.io" else "v1"
        obj["kind"] = rtype.kind
        self._stamp_new(rtype, obj)
        if rtype.has_status and rtype.plural not in ("namespaces",):
            obj.pop("status", None)
        if rtype.plural == "namespaces" and not rtype.group:
            obj["spec"] = {"finalizers": ["kubernetes"]}
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        if not rtype.custom:
            obj = builtins.drop_nulls(obj)
        problems = builtins.prepare_create(rtype.group, rtype.plural, obj)
        if problems:
            raise E.invalid_object(rtype.kind, rtype.group, name, problems)
        obj = self._admit(rtype, obj, None, params, call, name)
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            problems = crd_problems(obj)
            if problems:
                raise E.invalid_object(rtype.kind, rtype.group, name, [E.invalid(f, v, d) for f, v, d in problems])
            obj["metadata"].setdefault("finalizers", [])
            if CRD_CLEANUP not in obj["metadata"]["finalizers"]:
                obj["metadata"]["finalizers"].append(CRD_CLEANUP)
            obj["status"] = crd_status(obj)
        key = self._key(rtype, namespace, name)
        if self.store.get(*key) is not None:
            raise E.already_exists(rtype.plural, rtype.group, name)
        if "All" in _dry_run(params):
            obj["metadata"]["resourceVersion"] = str(self.store.rv)
            return obj
        stored = self.store.write(key, obj, "ADDED")
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            for new_type in crd_resource_types(stored):
                self.registry.add(new_type)
        if _matters_to_controllers(stored, None):
            self.controllers.schedule()  # a dependent of an owner that is already gone is collected too
        return stored

    # ----------------------------------------------------------------------------------------------
    # Update (PUT) and patch
    # ----------------------------------------------------------------------------------------------

    def _replace(self, rtype: ResourceType, namespace: str | None, name: str, call: Call) -> dict[str, Any]:
        body = call.json_body()
        if not isinstance(body, dict):
            raise E.bad_request("the body of the request must be a JSON object")
        if rtype.group == "events.k8s.io":
            body = builtins.v1_event_to_core(body)
        meta = _meta(body)
        if meta.get("name") and meta["name"] != name:
            raise E.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if rtype.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise E.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        old = self._current(rtype, namespace, name)
        given_rv = meta.get("resourceVersion")
        if not given_rv and rtype.custom:
            raise E.invalid_object(rtype.kind, rtype.group, name,
                                   [E.FieldError("Invalid", "metadata.resourceVersion", "must be specified for an update", E.GoLiteral("0x0"))])
        if given_rv and given_rv != old["metadata"]["resourceVersion"]:
            raise E.conflict(rtype.plural, rtype.group, name, E.STALE)
        return self._update(rtype, old, body, call.info.subresource, call.params, call)

    def _patch(self, rtype: ResourceType, namespace: str | None, name: str, call: Call) -> tuple[dict[str, Any], bool]:
        content_type = call.content_type
        accepted = patching.CUSTOM_RESOURCE_PATCH_TYPES if rtype.custom else patching.ALL_PATCH_TYPES
        if content_type not in accepted:
            raise E.unsupported_media_type(content_type, accepted)
        patch = patching.decode_body(content_type, call.body)
        existing = self.store.get(*self._key(rtype, namespace, name))
        if existing is None:
            if content_type == patching.APPLY_PATCH and isinstance(patch, dict):
                _meta(patch).setdefault("name", name)
                return self._create(rtype, namespace, patch, call.params, call=call), True
            raise E.not_found(rtype.plural, rtype.group, name)
        old = existing
        target = builtins.core_event_to_v1(old) if rtype.group == "events.k8s.io" else old
        patched = patching.apply(content_type, target, patch)
        if not isinstance(patched, dict):
            raise E.bad_request("the patched object must be a JSON object")
        if rtype.group == "events.k8s.io":
            patched = builtins.v1_event_to_core(patched)
        patched_rv = (patched.get("metadata") or {}).get("resourceVersion")
        if patched_rv and patched_rv != old["metadata"]["resourceVersion"]:
            raise E.conflict(rtype.plural, rtype.group, name, E.STALE)
        return self._update(rtype, old, patched, call.info.subresource, call.params, call), False

    def _update(self, rtype: ResourceType, old: dict[str, Any], new: dict[str, Any], subresource: str,
                params: dict[str, str], call: Call | None) -> dict[str, Any]:
        name = old["metadata"]["name"]
        new = copy.deepcopy(new)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if subresource == "status":
            # The status strategy: only .status changes; everything else is the stored object.
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            new = result
        else:
            meta = _meta(new)
            if not isinstance(meta, dict):
                raise E.bad_request("metadata must be an object")
            for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "name", "namespace", "generation"):
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
            meta.pop("managedFields", None)
            meta.pop("selfLink", None)
            if rtype.has_status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if rtype.plural == "namespaces" and not rtype.group:
                new["status"] = old.get("status", {"phase": "Active"})
                new["spec"] = old.get("spec", {})
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if old["metadata"].get("deletionTimestamp"):
            added = [f for f in new["metadata"].get("finalizers") or [] if f not in (old["metadata"].get("finalizers") or [])]
            if added:
                raise E.invalid_object(rtype.kind, rtype.group, name, [E.forbidden(
                    "metadata.finalizers", "no new finalizers can be added if the object is being deleted, found new finalizers "
                    "[]string{" + ", ".join(json.dumps(f) for f in added) + "}")])
        if not rtype.custom:
            new = builtins.drop_nulls(new)
        if subresource != "status":
            problems = builtins.prepare_update(rtype.group, rtype.plural, new, old)
            if problems:
                raise E.invalid_object(rtype.kind, rtype.group, name, problems)
        new = self._admit(rtype, new, old, params, call, name)
        if rtype.tracks_generation and subresource != "status":
            if _without_meta(new, rtype.has_status) != _without_meta(old, rtype.has_status):
                new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions") and subresource != "status":
            problems = crd_problems(new)
            if problems:
                raise E.invalid_object(rtype.kind, rtype.group, name, [E.invalid(f, v, d) for f, v, d in problems])
            new["status"] = crd_status(new)
        if new == old:
            return old  # a no-op write: no new resourceVersion, no event
        if "All" in _dry_run(params):
            return new
        key = self._key(rtype, old["metadata"].get("namespace"), name)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self.remove(rtype, key)
            return new
        stored = self.store.write(key, new, "MODIFIED")
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self.registry.remove_crd(name)
            for new_type in crd_resource_types(stored):
                self.registry.add(new_type)
        if _matters_to_controllers(new, old):
            self.controllers.schedule()
        return stored

    # ----------------------------------------------------------------------------------------------
    # Delete
    # ----------------------------------------------------------------------------------------------

    def _delete_options(self, call: Call) -> dict[str, Any]:
        body = call.json_body() if call.body else None
        options = dict(body) if isinstance(body, dict) else {}
        for key in ("propagationPolicy", "gracePeriodSeconds", "orphanDependents"):
            if key in call.params:
                options[key] = call.params[key]
        if "dryRun" in call.params:
            options["dryRun"] = [call.params["dryRun"]]
        return options

    def _delete(self, call: Call, rtype: ResourceType) -> aiohttp.web.StreamResponse:
        result, deleted_now = self.delete_one(rtype, call.info.namespace, call.info.name or "", self._delete_options(call))
        if deleted_now:
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                          "details": {"name": result["metadata"]["name"], "group": rtype.group, "kind": rtype.plural,
                                      "uid": result["metadata"]["uid"]}})
        return self._object_response(call, rtype, result)

    def delete_one(self, rtype: ResourceType, namespace: str | None, name: str, options: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        old = self._current(rtype, namespace, name)
        meta = old["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise E.conflict(rtype.plural, rtype.group, name,
                             f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: {meta['uid']}")
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta["resourceVersion"]:
            raise E.conflict(rtype.plural, rtype.group, name,
                             f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}, "
                             f"ResourceVersion in object meta: {meta['resourceVersion']}")
        policy = options.get("propagationPolicy")
        if policy is None and "orphanDependents" in options:
            policy = ORPHAN if str(options["orphanDependents"]).lower() == "true" else "Background"
        policy = {"Orphan": ORPHAN, "Foreground": FOREGROUND}.get(policy or rtype.default_propagation, policy or rtype.default_propagation)
        if policy not in (ORPHAN, FOREGROUND, "Background"):
            raise E.invalid_object("DeleteOptions", "", "", [E.FieldError("NotSupported", "propagationPolicy",
                                   'supported values: "Foreground", "Background", "Orphan", "nil"', options.get("propagationPolicy"))])
        grace = builtins.pod_grace_period(old, options) if (rtype.group, rtype.plural) == ("", "pods") else 0
        finalizers = list(meta.get("finalizers") or [])
        for special in (ORPHAN, FOREGROUND):
            if special in finalizers and policy != special:
                finalizers.remove(special)
        if policy in (ORPHAN, FOREGROUND) and policy not in finalizers:
            finalizers.append(policy)
        dry_run = "All" in (options.get("dryRun") or [])
        namespace_spec_finalizers = rtype.plural == "namespaces" and not rtype.group and (old.get("spec") or {}).get("finalizers")
        if not finalizers and not namespace_spec_finalizers and not grace:
            if dry_run:
                return old, True
            return self.remove(rtype, self._key(rtype, namespace, name)), True
        new = copy.deepcopy(old)
        if finalizers:
            new["metadata"]["finalizers"] = finalizers
        if not meta.get("deletionTimestamp"):
            new["metadata"]["deletionTimestamp"] = now_iso(seconds_ahead=grace)
            new["metadata"]["deletionGracePeriodSeconds"] = grace
            if meta.get("generation"):
                new["metadata"]["generation"] = int(meta["generation"]) + 1
        elif grace < int(meta.get("deletionGracePeriodSeconds") or 0):
            # A shorter grace period shortens a graceful deletion in progress (kubectl delete --now).
            new["metadata"]["deletionTimestamp"] = now_iso(seconds_ahead=grace)
            new["metadata"]["deletionGracePeriodSeconds"] = grace
        if rtype.plural == "namespaces" and not rtype.group:
            new["status"] = {"phase": "Terminating"}
        if new == old or dry_run:
            return new, False
        stored = self.store.write(self._key(rtype, namespace, name), new, "MODIFIED")
        self.controllers.schedule()
        return stored, False

    def _delete_collection(self, call: Call, rtype: ResourceType) -> aiohttp.web.StreamResponse:
        options = self._delete_options(call)
        deleted = []
        for obj in self._matching(call, rtype):
            result, _ = self.delete_one(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"], options)
            deleted.append(self.present(rtype, result))
        return _json({"apiVersion": rtype.api_version, "kind": rtype.list_kind,
                      "metadata": {"resourceVersion": str(self.store.rv)}, "items": deleted})

    def remove(self, rtype: ResourceType, key: Key) -> dict[str, Any]:
        last = self.store.delete(key)
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self.registry.remove_crd(key[2])
        self.controllers.schedule()
        return last

    # ----------------------------------------------------------------------------------------------
    # Access reviews (kubectl auth can-i)
    # ----------------------------------------------------------------------------------------------

    def _access_review(self, call: Call, rtype: ResourceType) -> aiohttp.web.StreamResponse:
        body = call.json_body() or {}
        spec = body.get("spec") or {}
        if rtype.plural == "selfsubjectaccessreviews":
            user = call.user
        else:
            name = spec.get("user", "")
            match = re.fullmatch(r"system:serviceaccount:([^:]+):([^:]+)", name)
            user = rbac.Identity.service_account(*match.groups()) if match else rbac.Identity(name, tuple(spec.get("groups") or []))
        resource_attrs = spec.get("resourceAttributes")
        if resource_attrs is not None:
            attrs_ = rbac.Attributes(user, resource_attrs.get("verb", ""), True, api_group=resource_attrs.get("group", ""),
                                     resource=resource_attrs.get("resource", ""), subresource=resource_attrs.get("subresource", ""),
                                     namespace=resource_attrs.get("namespace", ""), name=resource_attrs.get("name", ""))
        else:
            non = spec.get("nonResourceAttributes") or {}
            attrs_ = rbac.Attributes(user, non.get("verb", ""), False, path=non.get("path", ""))
        if user.is_admin or not self.rbac_enforced:
            status = {"allowed": True, "reason": "system:masters" if user.is_admin else "RBAC not enforced"}
        else:
            decision = self.policy().authorize(attrs_)
            status = {"allowed": decision.allowed}
            if decision.allowed:
                status["reason"] = decision.reason
        body["status"] = status
        body.setdefault("metadata", {})["creationTimestamp"] = None
        body["apiVersion"], body["kind"] = rtype.api_version, rtype.kind
        return _json(body, 201)


    def _rules_review(self, call: Call, rtype: ResourceType) -> aiohttp.web.StreamResponse:
        body = call.json_body() or {}
        namespace = (body.get("spec") or {}).get("namespace", "")
        if call.user.is_admin or not self.rbac_enforced:
            rules = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, {"verbs": ["*"], "nonResourceURLs": ["*"]}]
        else:
            rules = self.policy().rules_for(call.user, namespace) + rbac.OPEN_RULES
        body["status"] = _split_rules(rules)
        body.setdefault("metadata", {})["creationTimestamp"] = None
        body["apiVersion"], body["kind"] = rtype.api_version, rtype.kind
        return _json(body, 201)

def _split_rules(rules: list[dict[str, Any]]) -> dict[str, Any]:
    resource_rules = [{k: r[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if r.get(k)}
                      for r in rules if r.get("resources")]
    non_resource_rules = [{k: r[k] for k in ("verbs", "nonResourceURLs") if r.get(k)} for r in rules if r.get("nonResourceURLs")]
    return {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": False}


def _matters_to_controllers(new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """Whether a write may give the garbage collector or the namespace/CRD controllers work."""
    meta, before = new["metadata"], (old or {}).get("metadata", {})
    return bool(meta.get("deletionTimestamp") or meta.get("ownerReferences") != before.get("ownerReferences")
                or meta.get("finalizers") != before.get("finalizers"))


def _dry_run(params: dict[str, str]) -> list[str]:
    return [params["dryRun"]] if params.get("dryRun") else []
