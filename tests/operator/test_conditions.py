"""The conditions helper: transitions, observedGeneration, "changed?", and the phase derived from conditions."""

from __future__ import annotations

import pytest
from kompress_api.v1alpha1 import Condition, Phase

from kompress_operator import conditions

pytestmark = pytest.mark.unit

T1, T2 = "2026-11-26T10:00:00Z", "2026-11-26T10:05:00Z"


def set_condition(conds: list, ctype: str, status: str, reason: str, message: str, *, now: str, generation: int) -> bool:
    """Conditions.put, the one setter the status computation uses, seen on the wire form (a list of dicts)."""
    typed = conditions.Conditions([Condition.model_validate(cond) for cond in conds], now=now, generation=generation)
    changed = typed.put(ctype, status, reason, message)
    conds[:] = [cond.wire() for cond in typed.items]
    return changed


def test_a_new_condition_is_added_with_generation_and_time():
    conds: list = []
    assert set_condition(conds, conditions.RUNNING, "True", "WorkerRunning", "stage compress", now=T1, generation=3)
    assert conds == [{"type": "Running", "status": "True", "reason": "WorkerRunning", "message": "stage compress", "observedGeneration": 3, "lastTransitionTime": T1}]


def test_setting_the_same_again_changes_nothing():
    conds: list = []
    set_condition(conds, conditions.RUNNING, "True", "WorkerRunning", "m", now=T1, generation=1)
    assert not set_condition(conds, conditions.RUNNING, "True", "WorkerRunning", "m", now=T2, generation=1)
    assert conds[0]["lastTransitionTime"] == T1


def test_a_new_message_is_a_change_but_not_a_transition():
    conds: list = []
    set_condition(conds, conditions.QUEUED, "True", "Unschedulable", "0/3 nodes", now=T1, generation=1)
    assert set_condition(conds, conditions.QUEUED, "True", "Unschedulable", "0/4 nodes", now=T2, generation=1)
    assert conds[0]["message"] == "0/4 nodes" and conds[0]["lastTransitionTime"] == T1


def test_a_status_change_moves_the_transition_time():
    conds: list = []
    set_condition(conds, conditions.QUEUED, "True", "PodPending", "", now=T1, generation=1)
    assert set_condition(conds, conditions.QUEUED, "False", "Started", "", now=T2, generation=1)
    assert conds[0]["lastTransitionTime"] == T2


def test_a_new_generation_is_recorded():
    conds: list = []
    set_condition(conds, conditions.SUSPENDED, "True", "SuspendedBySpec", "", now=T1, generation=1)
    assert set_condition(conds, conditions.SUSPENDED, "True", "SuspendedBySpec", "", now=T2, generation=2)
    assert conds[0]["observedGeneration"] == 2 and conds[0]["lastTransitionTime"] == T1


def test_conditions_keep_a_stable_order_and_long_messages_are_cut():
    conds: list = []
    set_condition(conds, conditions.FAILED, "True", "X", "y" * 10000, now=T1, generation=1)
    set_condition(conds, conditions.PLANNED, "True", "PlanSucceeded", "", now=T1, generation=1)
    assert [x["type"] for x in conds] == ["Planned", "Failed"]
    assert len(conds[1]["message"]) == conditions.MAX_MESSAGE and conds[1]["message"].endswith("…")


def test_status_must_be_true_false_or_unknown():
    with pytest.raises(ValueError, match="True, False or Unknown"):
        set_condition([], conditions.RUNNING, "yes", "R", "", now=T1, generation=1)


def cond(ctype, status="True", reason="R"):
    return {"type": ctype, "status": status, "reason": reason}


@pytest.mark.parametrize(
    ("conds", "phase"),
    [
        ([], Phase.PENDING),
        ([cond("Planned", "Unknown", "Planning")], Phase.PLANNING),
        ([cond("Planned"), cond("Queued", reason="WaitingForKueueAdmission")], Phase.QUEUED),
        ([cond("Planned"), cond("Queued", "False"), cond("Running", reason="WorkerRunning")], Phase.RUNNING),
        ([cond("Planned"), cond("Running", reason="Publishing")], Phase.PUBLISHING),
        ([cond("Planned"), cond("Running", "False", "WorkerRetrying"), cond("Queued", reason="PodPending")], Phase.QUEUED),
        ([cond("Planned"), cond("Suspended", reason="SuspendedBySpec"), cond("Running", "False")], Phase.SUSPENDED),
        ([cond("Planned"), cond("Suspended"), cond("Succeeded")], Phase.SUCCEEDED),
        ([cond("Planned", "False", "PlanRejected"), cond("Failed", reason="PlanRejected")], Phase.FAILED),
        ([cond("Succeeded", "False"), cond("Failed", "False"), cond("Suspended", "False")], Phase.PENDING),
    ],
)
def test_phase_is_derived_from_conditions(conds, phase):
    assert conditions.phase(conds) is phase


def test_finished_means_succeeded_or_failed():
    assert conditions.is_finished([cond("Succeeded")])
    assert conditions.is_finished([cond("Failed")])
    assert not conditions.is_finished([cond("Running"), cond("Failed", "False")])
