"""The worker's stages are one table (kompress_api.stages, re-exported by the worker protocol): the CRD's description
of status.progress.stage, the worker's pipeline, its progress weights and the plan's stage times all say what it says."""

from __future__ import annotations

import re

import pytest
import yaml

from kompress_api import worker_protocol
from kompress_api.stages import DONE, STAGE_NAMES, STAGES

from .conftest import ROOT

pytestmark = pytest.mark.unit


def _progress_stage_description(path) -> str:
    crd = yaml.safe_load(path.read_text())
    [version] = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["progress"]["properties"]["stage"]["description"]


@pytest.mark.parametrize("path", ["crds/kompress.dev_compressionjobs.yaml", "charts/kompress/files/crds/kompress.dev_compressionjobs.yaml"])
def test_the_crd_describes_exactly_the_tables_stages_in_order(path):
    description = _progress_stage_description(ROOT / path)
    listed = description.split("current stage: ", 1)[1].rstrip(".").split(", ")
    assert listed == [*STAGE_NAMES, DONE]


def test_the_worker_runs_and_weighs_the_tables_stages():
    from kompress_job import pipeline, progress

    assert pipeline.STAGES == list(STAGE_NAMES) == list(pipeline.FUNCTIONS)
    assert progress.STAGE_WEIGHTS == {stage.name: stage.weight for stage in STAGES}
    assert worker_protocol.STAGES is STAGES


def test_without_evaluation_the_worker_runs_the_table_less_its_evaluation_stages():
    from kompress_job import pipeline
    from kompress_testing.jobs import make_job

    job = make_job("/models/tiny", "s3://models/tiny")
    assert pipeline.stages_for(job) == list(STAGE_NAMES)
    job.spec.evaluation.enabled = False
    assert pipeline.stages_for(job) == [s.name for s in STAGES if not s.evaluation_only]
    assert {"baseline", "evaluate"} == {s.name for s in STAGES if s.evaluation_only}


def test_the_plans_stage_times_name_the_tables_stages():
    source = (ROOT / "job_image/kompress_job/planning/footprint.py").read_text()
    named = {part for name in re.findall(r'StageTime\(\s*"([a-z+-]+)"', source) for part in name.split("+")}
    assert len(named) >= 6 and named <= set(STAGE_NAMES)
