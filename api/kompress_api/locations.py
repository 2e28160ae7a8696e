"""Whether the output of a job is, contains or lies inside its model: a job must never write over its source.

Owns: the one comparison of two locations, in three forms that agree: a CEL rule the API server
evaluates on the URI strings (trailing slashes, `/PATH` and `file:///PATH` normalised, S3 endpoints
compared), the same test in Python for the typed model, and the test on where two volume-backed paths
land inside their PersistentVolumeClaims (which only the planner sees through, with the volumes).
Must not: read the filesystem or the network.
"""

from __future__ import annotations

import posixpath
import re

OVERLAP_MESSAGE = (
    "spec.output.uri must not be spec.model.uri, contain it or lie inside it: the job would write over its own source model"
)


def canonical(uri: str) -> str:
    """`/PATH` as `file:///PATH`, without trailing slashes (hf:// and s3:// URIs otherwise as given)."""
    uri = "file://" + uri if uri.startswith("/") else uri
    # The same as CEL's `find('^.*[^/]')`: the longest prefix that ends in something other than '/'.
    match = re.match(r"^.*[^/]", uri)
    return match.group(0) if match else ""


def overlaps(a: str, b: str) -> bool:
    """`a` and `b` name the same place, or one lies inside the other (whole path segments only)."""
    return (a + "/").startswith(b + "/") or (b + "/").startswith(a + "/")


def uris_overlap(model_uri: str, model_endpoint: str | None, output_uri: str, output_endpoint: str | None) -> bool:
    """What the CEL rule says: the output is the model, holds it or lies in it (on the same S3 endpoint)."""
    return (model_endpoint or "") == (output_endpoint or "") and overlaps(canonical(model_uri), canonical(output_uri))


def _cel_canonical(uri: str) -> str:
    return f"({uri}.startsWith('/') ? 'file://' + {uri} : {uri}).find('^.*[^/]')"


def _cel_endpoint(location: str) -> str:
    return f"(has(self.{location}.s3) && has(self.{location}.s3.endpoint) ? self.{location}.s3.endpoint : '')"


def _cel_overlap_rule() -> str:
    model, output = _cel_canonical("self.model.uri"), _cel_canonical("self.output.uri")
    return (
        f"{_cel_endpoint('model')} != {_cel_endpoint('output')} || "
        f"!(({output} + '/').startsWith({model} + '/') || ({model} + '/').startsWith({output} + '/'))"
    )


OVERLAP_RULE = _cel_overlap_rule()


def in_claim(path: str, mount_path: str, sub_path: str | None) -> str | None:
    """Where `path` (in the container) lies inside the claim mounted at `mount_path`, or None if outside it."""
    path, mount = posixpath.normpath(path), posixpath.normpath(mount_path)
    if not (path + "/").startswith(mount.rstrip("/") + "/"):
        return None
    rest = posixpath.relpath(path, mount)
    return posixpath.normpath(posixpath.join("/", sub_path or "", "" if rest == "." else rest))
