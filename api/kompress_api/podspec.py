"""What the fields of a pod spec may hold, as the API server validates a batch/v1 Job.

Owns: the syntax of label values, qualified names (label and toleration keys), extended resource
names and DNS subdomain names (k8s.io/apimachinery/pkg/util/validation), the Toleration and node
affinity types, and the mount paths the worker keeps for itself. The API model refuses with these what a Job could
never hold, so the refusal names the CompressionJob's field instead of failing the Job create.
RE2 syntax: the API server evaluates patterns and CEL `matches` with RE2 (no lookaround; `$` is the
end of the text).
Must not: know the CompressionJob.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import StringConstraints, model_validator

from kompress_api._model import ApiModel, api_field
from kompress_api.paths import WORKER_PATHS

DNS_SUBDOMAIN_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Label values (the Kueue labels, nodeSelector values, toleration values), qualified names (label and
# toleration keys: an optional DNS-subdomain prefix of at most 253 characters, '/', a name of at most 63),
# extended resource names (a qualified name with a prefix). RE2 syntax: the API server evaluates them with RE2.
LABEL_VALUE_RE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_DNS_PART = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_NAME_PART = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
QUALIFIED_NAME_RE = rf"^({_DNS_PART}/)?{_NAME_PART}$"
PREFIX_LENGTH_RE = r"^([^/]{1,253}/)?[^/]*$"
EXTENDED_RESOURCE_RE = rf"^{_DNS_PART}/{_NAME_PART}$"
QUALIFIED_NAME_MAX = 253 + 1 + 63
# A mount path on, above or inside a path the worker uses itself (its scratch, /dev/shm, the termination log).
_PARENTS = sorted({p[: i or 1] for p in WORKER_PATHS for i in [j for j, ch in enumerate(p) if ch == "/"]})
WORKER_PATH_RE = "^(" + "|".join(p.replace("/", "/+") for p in _PARENTS) + "|(" + "|".join(p.replace("/", "/+") for p in WORKER_PATHS) + ")(/.*)?)/*$"


LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_RE)]


class Toleration(ApiModel):
    """A toleration of the worker pod (core/v1 Toleration), checked as the API server checks a pod's."""

    cel_rules: ClassVar[list[tuple[str, str]]] = [
        ("(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
         "a toleration without a key must have operator Exists (it then tolerates every taint)"),
        ("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
         "a toleration with operator Exists must have no value"),
        ("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
         "tolerationSeconds applies to effect NoExecute only"),
    ]

    key: str | None = api_field(
        None,
        description="the taint key: a label key (PREFIX/NAME). Empty with operator Exists tolerates every taint.",
        pattern=rf"^(({_DNS_PART}/)?{_NAME_PART})?$",
        rules=[(f"self.matches('{PREFIX_LENGTH_RE}')", "a toleration key's prefix must be at most 253 characters")],
        max_length=QUALIFIED_NAME_MAX,
    )
    operator: Literal["Exists", "Equal"] | None = api_field(None, description="Exists or Equal. Default Equal.")
    value: LabelValue | None = api_field(None, description="the taint value, for operator Equal: a label value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute", ""] | None = api_field(None, description="NoSchedule, PreferNoSchedule or NoExecute; empty matches every effect.")
    toleration_seconds: int | None = api_field(None, description="for effect NoExecute: how long the pod stays bound after the taint appears.")

    @model_validator(mode="after")
    def _as_the_api_server_checks(self) -> "Toleration":
        # The same rules as cel_rules.
        exists = self.operator == "Exists"
        if not self.key and not exists:
            raise ValueError(self.cel_rules[0][1])
        if exists and self.value:
            raise ValueError(self.cel_rules[1][1])
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError(self.cel_rules[2][1])
        return self


NODE_SELECTOR_KEYS_RULE = f"self.all(k, k.matches(r'{QUALIFIED_NAME_RE}') && k.matches(r'{PREFIX_LENGTH_RE}'))"
NODE_SELECTOR_KEYS_MESSAGE = "nodeSelector keys must be label keys: an optional DNS-subdomain prefix (at most 253 characters) and '/', then a name of at most 63 characters (letters, digits, '-', '_', '.')"


# --- node affinity (core/v1 NodeAffinity), typed; pod (anti-)affinity is still passed through unchecked ---

REQUIREMENT_RULES: list[tuple[str, str]] = [
    ("!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)", "operator In and NotIn need at least one value"),
    ("!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0", "operator Exists and DoesNotExist take no values"),
    ("!(self.operator in ['Gt', 'Lt']) || (has(self.values) && size(self.values) == 1 && self.values[0].matches('^-?[0-9]+$'))",
     "operator Gt and Lt take exactly one value, an integer"),
]


class NodeSelectorRequirement(ApiModel):
    """A node label (or field) requirement: key, operator, values."""

    cel_rules: ClassVar[list[tuple[str, str]]] = REQUIREMENT_RULES

    key: str = api_field(
        description="the node label key (PREFIX/NAME).",
        pattern=QUALIFIED_NAME_RE,
        rules=[(f"self.matches('{PREFIX_LENGTH_RE}')", "a label key's prefix must be at most 253 characters")],
        max_length=QUALIFIED_NAME_MAX,
    )
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = api_field(description="In, NotIn, Exists, DoesNotExist, Gt or Lt.")
    # Not label values: the API server checks only how many there are (a value no label can hold matches nothing).
    values: list[Annotated[str, StringConstraints(max_length=253)]] | None = api_field(
        None, description="one or more for In/NotIn, none for Exists/DoesNotExist, one integer for Gt/Lt.", max_length=64
    )

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> "NodeSelectorRequirement":
        # The same rules as cel_rules.
        values = self.values or []
        if self.operator in ("In", "NotIn") and not values:
            raise ValueError(REQUIREMENT_RULES[0][1])
        if self.operator in ("Exists", "DoesNotExist") and values:
            raise ValueError(REQUIREMENT_RULES[1][1])
        if self.operator in ("Gt", "Lt") and not (len(values) == 1 and values[0].lstrip("-").isdigit()):
            raise ValueError(REQUIREMENT_RULES[2][1])
        return self


class NodeSelectorTerm(ApiModel):
    """Requirements a node must meet together."""

    match_expressions: list[NodeSelectorRequirement] | None = api_field(None, description="requirements on node labels.", max_length=32)
    match_fields: list[NodeSelectorRequirement] | None = api_field(None, description="requirements on node fields (metadata.name).", max_length=32)


class NodeSelector(ApiModel):
    """Terms of which a node must meet one."""

    node_selector_terms: list[NodeSelectorTerm] = api_field(description="terms, at least one; a node must meet one of them.", min_length=1, max_length=32)


class PreferredSchedulingTerm(ApiModel):
    """A term the scheduler prefers, with its weight."""

    weight: int = api_field(description="1 to 100.", ge=1, le=100)
    preference: NodeSelectorTerm = api_field(description="the term preferred.")


class NodeAffinity(ApiModel):
    """Where the worker pod may go (required) and would rather go (preferred)."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = api_field(None, description="nodes the pod must go to.")
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = api_field(None, description="nodes the pod would rather go to.", max_length=32)


class Affinity(ApiModel):
    """core/v1 Affinity: nodeAffinity is checked as the API server checks it; pod (anti-)affinity is passed through."""

    node_affinity: NodeAffinity | None = api_field(None, description="node affinity.")
    pod_affinity: dict[str, Any] | None = api_field(None, description="pod affinity (core/v1 PodAffinity), passed through unchecked.", preserve_unknown=True)
    pod_anti_affinity: dict[str, Any] | None = api_field(None, description="pod anti-affinity (core/v1 PodAntiAffinity), passed through unchecked.", preserve_unknown=True)
