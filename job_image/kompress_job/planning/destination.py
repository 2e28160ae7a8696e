"""Whether the output would land on the model once the volumes are seen through.

The API refuses an output URI that is, holds or lies in the model URI (kompress_api.locations). Two
different paths can still be one place: `/models/glm` and `/out/glm` with both volumes on the same
PersistentVolumeClaim (and sub-paths that meet), or, on a laptop, a symlink. The plan sees the volumes,
so it refuses the first; preflight, which sees the filesystem, the second.
Must not: read anything but the spec (this module), or write anything.
"""

from __future__ import annotations

from kompress_api import locations
from kompress_api.v1alpha1 import CompressionJobSpec, VolumeRef

from kompress_job.planning import problems


def file_path(uri: str) -> str | None:
    """The path a file:// URI or a plain absolute path names; None for hf:// and s3://."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    return uri if uri.startswith("/") else None


def _claim_location(uri: str, volume: VolumeRef | None) -> tuple[str, str] | None:
    path = file_path(uri)
    if path is None or volume is None:
        return None
    inside = locations.in_claim(path, volume.mount_path, volume.sub_path)
    return None if inside is None else (volume.claim_name, inside)


def output_overlaps_model(spec: CompressionJobSpec) -> list[problems.Problem]:
    """An error when the output and the model resolve to the same place in one PersistentVolumeClaim."""
    model = _claim_location(spec.model.uri, spec.model.volume)
    output = _claim_location(spec.output.uri, spec.output.volume)
    if model is None or output is None or model[0] != output[0] or not locations.overlaps(model[1], output[1]):
        return []
    return [
        problems.error(
            problems.OUTPUT_OVERLAPS_MODEL,
            f"spec.output.uri ({spec.output.uri}) and spec.model.uri ({spec.model.uri}) are the same place on the "
            f"PersistentVolumeClaim {model[0]} ({output[1]} and {model[1]}): the job would write over its own source model",
            "write the output to another claim, or to a folder outside the model's",
        )
    ]
