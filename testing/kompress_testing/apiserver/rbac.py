"""Authentication by bearer token and RBAC authorization over the Roles and bindings stored in the server.

Owns: mapping tokens to identities (users, groups, ServiceAccounts as
`system:serviceaccount:NS:NAME`), the RBAC evaluation of kube-apiserver's RBACAuthorizer (verbs,
apiGroups, resources incl. `res/sub` and `*/sub`, resourceNames, nonResourceURLs, Role vs ClusterRole,
RoleBinding vs ClusterRoleBinding, aggregated ClusterRoles), its reason strings
(`RBAC: allowed by RoleBinding "b/ns" of Role "r" to ServiceAccount "sa/ns"`), and its 403 message.
Must not: read storage directly; the server hands it the Roles and bindings.

Approximations: discovery, /version, /openapi and health endpoints are open to everyone, and
self-subject access/rules reviews to every authenticated user (a real cluster grants them via the
bootstrap `system:discovery`, `system:public-info-viewer` and `system:basic-user` bindings); there
are no other bootstrap ClusterRoles (`admin`, `edit`, `view`) unless a test creates them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

ADMIN_GROUP = "system:masters"
OPEN_PATH_PREFIXES = ("/api", "/apis", "/version", "/openapi", "/healthz", "/livez", "/readyz")
SELF_REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"), ("authorization.k8s.io", "selfsubjectrulesreviews"),
                ("authentication.k8s.io", "selfsubjectreviews")}


@dataclass(frozen=True)
class Identity:
    name: str
    groups: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups

    @classmethod
    def service_account(cls, namespace: str, name: str) -> Identity:
        return cls(f"system:serviceaccount:{namespace}:{name}",
                   ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"))


ANONYMOUS = Identity("system:anonymous", ("system:unauthenticated",))
# What the bootstrap roles we treat as open grant (see the module docstring), as rules.
OPEN_RULES = [
    {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
    {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]},
    {"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
                                           "/readyz", "/version", "/version/"]},
]
ADMIN = Identity("kubernetes-admin", (ADMIN_GROUP, "system:authenticated"))


@dataclass(frozen=True)
class Attributes:
    """authorizer.Attributes of one request."""

    user: Identity
    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    def describe(self) -> str:
        if not self.resource_request:
            return f"{self.verb} {self.path}"
        target = self.resource + (f"/{self.subresource}" if self.subresource else "")
        where = f" in namespace {self.namespace}" if self.namespace else " (cluster scope)"
        return f"{self.verb} {target}{'.' + self.api_group if self.api_group else ''}{' ' + self.name if self.name else ''}{where}"


@dataclass(frozen=True)
class Decision:
    attributes: Attributes
    allowed: bool
    reason: str


def forbidden_message(attrs: Attributes) -> str:
    """responsewriters.forbiddenMessage."""
    user = attrs.user.name
    if not attrs.resource_request:
        return f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    if attrs.namespace:
        return f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" in the namespace "{attrs.namespace}"'
    return f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.api_group}" at the cluster scope'


def _has(values: Iterable[str], wanted: str) -> bool:
    values = list(values or [])
    return "*" in values or wanted in values


def _resource_matches(rule: dict[str, Any], attrs: Attributes) -> bool:
    combined = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    for resource in rule.get("resources") or []:
        if resource in ("*", combined):
            return True
        if attrs.subresource and resource == f"*/{attrs.subresource}":
            return True
    return False


def rule_allows(rule: dict[str, Any], attrs: Attributes) -> bool:
    if not _has(rule.get("verbs") or [], attrs.verb):
        return False
    if not attrs.resource_request:
        for url in rule.get("nonResourceURLs") or []:
            if url == "*" or url == attrs.path or (url.endswith("*") and attrs.path.startswith(url[:-1])):
                return True
        return False
    if not _has(rule.get("apiGroups") or [], attrs.api_group):
        return False
    if not _resource_matches(rule, attrs):
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


def _subject_matches(subject: dict[str, Any], user: Identity, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user.name
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.name == f"system:serviceaccount:{namespace}:{subject.get('name')}"
    return False


def _describe_subject(subject: dict[str, Any], binding_namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{subject.get("name")}/{subject.get("namespace") or binding_namespace}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


def _label_selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass
class Policy:
    """A snapshot of the RBAC objects: lists of raw Role/ClusterRole/RoleBinding/ClusterRoleBinding dicts."""

    roles: list[dict[str, Any]] = field(default_factory=list)
    cluster_roles: list[dict[str, Any]] = field(default_factory=list)
    role_bindings: list[dict[str, Any]] = field(default_factory=list)
    cluster_role_bindings: list[dict[str, Any]] = field(default_factory=list)

    def _cluster_role_rules(self, name: str) -> list[dict[str, Any]]:
        role = next((r for r in self.cluster_roles if r["metadata"]["name"] == name), None)
        if role is None:
            return []
        rules = list(role.get("rules") or [])
        aggregation = role.get("aggregationRule")
        if aggregation:
            # The clusterrole-aggregation controller's result, computed on read.
            for other in self.cluster_roles:
                labels = other["metadata"].get("labels") or {}
                if other is not role and any(_label_selector_matches(s, labels) for s in aggregation.get("clusterRoleSelectors") or []):
                    rules.extend(other.get("rules") or [])
        return rules

    def _role_rules(self, namespace: str, name: str) -> list[dict[str, Any]]:
        role = next((r for r in self.roles if r["metadata"]["name"] == name and r["metadata"].get("namespace") == namespace), None)
        return list(role.get("rules") or []) if role else []

    def rules_for(self, user: Identity, namespace: str) -> list[dict[str, Any]]:
        """Every rule that applies to the user in a namespace (what SelfSubjectRulesReview lists)."""
        rules: list[dict[str, Any]] = []
        for binding in self.cluster_role_bindings:
            if any(_subject_matches(s, user, "") for s in binding.get("subjects") or []):
                rules.extend(self._cluster_role_rules((binding.get("roleRef") or {}).get("name", "")))
        for binding in self.role_bindings:
            bound_namespace = binding["metadata"].get("namespace", "")
            if bound_namespace == namespace and any(_subject_matches(s, user, bound_namespace) for s in binding.get("subjects") or []):
                ref = binding.get("roleRef") or {}
                rules.extend(self._cluster_role_rules(ref.get("name", "")) if ref.get("kind") == "ClusterRole"
                             else self._role_rules(bound_namespace, ref.get("name", "")))
        return rules

    def authorize(self, attrs: Attributes) -> Decision:
        for binding in self.cluster_role_bindings:
            for subject in binding.get("subjects") or []:
                if not _subject_matches(subject, attrs.user, ""):
                    continue
                ref = binding.get("roleRef") or {}
                if any(rule_allows(rule, attrs) for rule in self._cluster_role_rules(ref.get("name", ""))):
                    reason = (f'RBAC: allowed by ClusterRoleBinding "{binding["metadata"]["name"]}" of ClusterRole '
                              f'"{ref.get("name")}" to {_describe_subject(subject, "")}')
                    return Decision(attrs, True, reason)
        if attrs.namespace:
            for binding in self.role_bindings:
                namespace = binding["metadata"].get("namespace", "")
                if namespace != attrs.namespace:
                    continue
                for subject in binding.get("subjects") or []:
                    if not _subject_matches(subject, attrs.user, namespace):
                        continue
                    ref = binding.get("roleRef") or {}
                    rules = self._cluster_role_rules(ref.get("name", "")) if ref.get("kind") == "ClusterRole" \
                        else self._role_rules(namespace, ref.get("name", ""))
                    if any(rule_allows(rule, attrs) for rule in rules):
                        reason = (f'RBAC: allowed by RoleBinding "{binding["metadata"]["name"]}/{namespace}" of '
                                  f'{ref.get("kind")} "{ref.get("name")}" to {_describe_subject(subject, namespace)}')
                        return Decision(attrs, True, reason)
        return Decision(attrs, False, forbidden_message(attrs))


@dataclass
class Authenticator:
    """Bearer tokens known to the server. Requests without a token are anonymous."""

    tokens: dict[str, Identity] = field(default_factory=dict)

    def identify(self, authorization: str | None, on_unknown: Callable[[], Exception]) -> Identity:
        if not authorization:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        identity = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if identity is None:
            raise on_unknown()
        return identity
