"""An S3 prefix as spec.evaluation.taskSource: the worker downloads every file under it into scratch with the
task source's own credentials (KOMPRESS_TASKS_S3_*), and an empty prefix or refused credentials say so."""

from __future__ import annotations

import pytest
from kompress_api.v1alpha1 import TaskSource

from kompress_job.model import task_scores
from kompress_job.errors import AccessDenied, InvalidSpec
from kompress_testing import lmeval_task

pytestmark = pytest.mark.integration


def test_an_s3_task_source_is_downloaded_into_scratch_with_its_own_credentials(s3, bucket, tmp_path):
    for path in lmeval_task.FOLDER.iterdir():
        s3.client().put_object(Bucket=bucket, Key=f"evals/chat/{path.name}", Body=path.read_bytes())
    source = TaskSource.model_validate({"uri": f"s3://{bucket}/evals/chat", "s3": s3.access(credentialsSecret="task-creds")})
    folder = task_scores.task_folder(source, tmp_path, s3.env("tasks"))
    assert folder == tmp_path / task_scores.SOURCE_DIR
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {p.name: p.read_bytes() for p in lmeval_task.FOLDER.iterdir()}

    with pytest.raises(AccessDenied, match="KOMPRESS_TASKS_S3_AWS_ACCESS_KEY_ID is not set"):
        task_scores.task_folder(source, tmp_path / "again", {})
    empty = TaskSource.model_validate({"uri": f"s3://{bucket}/nothing-here", "s3": s3.access()})
    with pytest.raises(InvalidSpec, match="holds no files"):
        task_scores.task_folder(empty, tmp_path / "empty", s3.env("tasks"))
