"""Stage preflight: refuse in seconds what would otherwise fail hours later.

Checks, before any download or GPU work: the output is not the model's folder (symlinks resolved), it can be written with the given credentials
(AccessDenied), its endpoint answers (StorageUnreachable), no finished model is already there unless
spec.output.overwrite (OutputExists; for hf://, a branch that holds files); the signing key of spec.output.signing is
there and usable (AccessDenied); the model and the calibration data exist and can be read.
Must not: download weights or data.
"""

from __future__ import annotations

import os

from kompress_api import locations
from kompress_api.v1alpha1 import CompressionJobSpec

from kompress_job.model import calibration_data
from kompress_job.outputs import signing

from kompress_job.io import sources
from kompress_job.context import RunContext
from kompress_job.errors import InvalidSpec, OutputExists
from kompress_job.planning.destination import file_path
from kompress_job.io.storage import MANIFEST, open_destination


def check_not_the_model(spec: CompressionJobSpec) -> None:
    """The output folder is not the model's, inside it or around it, once symlinks are resolved.

    The API compared the URIs as strings; on a laptop (or in a pod, inside one volume) two different
    paths can still be one folder.
    """
    model, output = file_path(spec.model.uri), file_path(spec.output.uri)
    if model is None or output is None:
        return
    real_model, real_output = os.path.realpath(model), os.path.realpath(output)
    if locations.overlaps(real_model, real_output):
        raise InvalidSpec(
            f"spec.output.uri ({spec.output.uri}) and spec.model.uri ({spec.model.uri}) are the same folder, or one holds the other, "
            f"once links are resolved ({real_output} and {real_model}): the job would write over its own source model"
        )


def check_output(ctx: RunContext, *, quick: bool = True) -> None:
    """The output is writable and holds no finished model (unless overwrite). Run again before publishing."""
    output = ctx.job.spec.output
    destination = open_destination(output, ctx.env, quick=quick)
    destination.check_writable()
    if not output.overwrite and destination.read_text(MANIFEST) is not None:
        raise OutputExists(
            f"a finished model is already at {output.uri} ({MANIFEST} exists); set spec.output.overwrite: true to replace it, or choose another spec.output.uri"
        )


def run(ctx: RunContext) -> None:
    spec = ctx.job.spec
    ctx.progress.set_steps(0, 3, message=f"checking the output {spec.output.uri}")
    check_not_the_model(spec)
    check_output(ctx)
    if spec.output.signing is not None:
        material = signing.load_material(spec.output.signing, ctx.env)
        ctx.log.info("signing with a %s (public key sha256 %s)", "certificate" if material.method == "certificate" else "key", material.public_key_sha256)
    ctx.output_checked = True
    ctx.progress.set_steps(1, message=f"checking the model {spec.model.uri}")
    commit = sources.check_model(spec.model, ctx.env)
    if commit:
        # Pinned here, once: every later stage (plan, fetch-model) reads this commit, never the branch.
        ctx.resolved_revision = commit
        ctx.log.info("model %s: revision %s is commit %s", spec.model.uri, spec.model.revision or "main", commit)
    ctx.progress.set_steps(2, message=f"checking the calibration data {spec.calibration.uri}")
    dataset_commit = calibration_data.check_source(spec.calibration, ctx.env)
    if dataset_commit:
        ctx.calibration_revision = dataset_commit
        ctx.log.info("calibration %s: revision %s is commit %s", spec.calibration.uri, spec.calibration.revision or "main", dataset_commit)
    ctx.progress.set_steps(3, message="inputs and output checked")
