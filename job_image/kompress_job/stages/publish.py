"""Stage publish: the checkpoint to spec.output.uri, the model card, and the manifest LAST.

Order, and why:
1. Check the destination again (another job may have finished there since preflight): OutputExists.
2. Overwriting: delete the old manifest first, so the prefix stops being a finished model before any
   of its files change; then delete files only the old manifest listed.
3. Upload every checkpoint file in parallel, with per-part SHA-256 checksums; files already there with
   the same content (an interrupted earlier attempt) are skipped.
4. The model card README.md, then (spec.output.signing) the signature model.sig over every published file, the card
   and the manifest included, then kompress.json. Readers treat a prefix without kompress.json as unfinished.
5. finish(): for an hf:// output the one commit that holds every file (nothing is in the repository before it); for an
   oci:// image, the config and the manifest by tag, last (kompress_job.io.oci): until then no tag names the image. The
   commit id or the digest is recorded (ctx.destination).
A model that missed the quality gate (ctx.gate_failures) goes to the `<uri>.rejected` sibling instead,
never under the final prefix; ctx.rejected_uri is set and the job fails with QualityGateFailed.
Must not: write any secret value (the manifest and card pass through the redactor as a last guard).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import PublishedDestination

from kompress_job.outputs import manifest as manifest_mod
from kompress_job.outputs import model_card
from kompress_job.outputs import signing as signing_mod
from kompress_job.outputs.signing import SigningMaterial
from kompress_job.context import RunContext
from kompress_job.errors import KompressError, OutputExists, QualityGateFailed
from kompress_job.redaction import Redactor
from kompress_job.io.storage import MANIFEST, MODEL_CARD, SIGNATURE, Destination, StoredFile, open_destination, rejected_uri


def checkpoint_files(folder: Path) -> list[tuple[Path, str]]:
    """(path, name) of every file to publish; our own card and manifest are written separately."""
    files = []
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and name not in (MANIFEST, MODEL_CARD, SIGNATURE) and not name.startswith(".kompress"):
            files.append((path, name))
    return files


def _guarded(text: str, redact: Redactor, what: str, ctx: RunContext) -> str:
    clean = redact(text)
    if clean != text:
        ctx.log.warning("a secret value appeared in the %s and was masked; check the spec for credentials in plain fields", what)
    return clean


def run(ctx: RunContext) -> None:
    spec = ctx.job.spec
    if ctx.checkpoint_dir is None or not Path(ctx.checkpoint_dir).is_dir():
        raise KompressError("nothing to publish: the save stage left no checkpoint folder")
    started = time.monotonic()
    rejected = bool(ctx.gate_failures)
    uri = rejected_uri(spec.output.uri) if rejected else spec.output.uri
    destination = open_destination(spec.output, ctx.env, uri=uri)
    redact = Redactor.from_env(ctx.env)
    # A rejected model is not signed: a signature by the release key reads as "approved" to supply-chain policies.
    material = signing_mod.load_material(spec.output.signing, ctx.env) if spec.output.signing is not None and not rejected else None

    # 1. Nothing finished there (a rejected copy may always be replaced: it is never a finished model).
    destination.check_writable()
    old_text = destination.read_text(MANIFEST)
    if old_text is not None and not rejected and not spec.output.overwrite:
        raise OutputExists(f"a finished model appeared at {uri} while this job ran ({MANIFEST} exists); set spec.output.overwrite: true to replace it")
    files = checkpoint_files(Path(ctx.checkpoint_dir))
    # 2. Unpublish the old model before touching its files.
    if old_text is not None:
        _unpublish(destination, old_text, files, uri, ctx)
    # 3. The checkpoint.
    stored = _upload_checkpoint(destination, files, uri, ctx)
    # 4. Card, then (signature and) manifest; 5. finish().
    doc = _manifest_doc(ctx, stored, rejected, material, started)
    _put_card_and_manifest(destination, doc, files, material, redact, uri, ctx)
    destination.finish()
    ctx.log.info("publish: %d files, %.2f GB at %s; manifest written", len(stored) + 1, doc["checkpointBytes"] / 1e9, uri)
    published = destination.published()
    if material is not None:
        published = published.model_copy(update={"signature": SIGNATURE})
    _record_destination(ctx, destination, published, rejected, uri)


def _unpublish(destination: Destination, old_text: str, files: list[tuple[Path, str]], uri: str, ctx: RunContext) -> None:
    """The old manifest first (the prefix stops being a finished model), then the files only it listed."""
    destination.delete([MANIFEST])
    try:
        old_names = {f["path"] for f in manifest_mod.read(json.loads(old_text))["files"]}
    except ValueError as err:  # not JSON, or not a manifest this reader knows (ManifestError): what it listed is unknown
        ctx.log.warning("publish: the old %s at %s is unreadable (%s); files only it listed are left", MANIFEST, uri, err)
        old_names = set()
    # The old signature goes too: it signed the old files, and a new one (if any) is written before the manifest.
    stale = sorted((old_names - {name for _, name in files} - {MODEL_CARD}) | {SIGNATURE})
    destination.delete(stale)
    ctx.log.info("publish: replacing the model at %s (%d stale files removed)", uri, len(stale))


def _upload_checkpoint(destination: Destination, files: list[tuple[Path, str]], uri: str, ctx: RunContext) -> list[StoredFile]:
    ctx.progress.message(f"uploading {len(files)} files to {uri}")
    stored = destination.upload(files, on_bytes=ctx.progress.transfer)
    skipped = [s for s in stored if s.skipped]
    ctx.log.info(
        "publish: sent %d of %d bytes; %d of %d files were already at %s with the same SHA-256",
        sum(s.sent for s in stored),
        sum(s.size for s in stored),
        len(skipped),
        len(stored),
        uri,
        extra={"bytes_sent": sum(s.sent for s in stored), "files_skipped": len(skipped)},
    )
    if ctx.checkpoint_bytes is None:
        ctx.checkpoint_bytes = sum(s.size for s in stored)
    return stored


def _entry(stored: StoredFile) -> dict[str, Any]:
    """A published file as the manifest lists it."""
    return {"path": stored.name, "size": stored.size, "sha256": stored.sha256, **({"s3Checksum": stored.s3_checksum} if stored.s3_checksum else {}),
            **({"ociLayer": stored.layer_digest} if stored.layer_digest else {})}


def _manifest_doc(ctx: RunContext, stored: list[StoredFile], rejected: bool, material: SigningMaterial | None, started: float) -> dict[str, Any]:
    """kompress.json's content, the card not listed yet (it is written from this document)."""
    timings = dict(ctx.timings)
    timings["publish"] = round(time.monotonic() - started, 3)
    doc = manifest_mod.build_manifest(
        ctx.job,
        status="rejected" if rejected else "published",
        resolved_revision=ctx.resolved_revision,
        source_bytes=ctx.source_bytes,
        files=[_entry(s) for s in stored],
        recipe=manifest_mod.recipe_summary(ctx.recipe),
        calibration_used=_calibration_used(ctx),
        metrics=ctx.metrics.wire() if ctx.metrics is not None else None,
        gate_failures=ctx.gate_failures,
        tasks=_tasks(ctx),
        timings=timings,
        libraries=manifest_mod.library_versions(),
        mtp=ctx.mtp.summary() if ctx.mtp is not None else None,
    )
    if material is not None:
        doc["signature"] = signing_mod.record(material, SIGNATURE)
    return doc


def _put_card_and_manifest(destination: Destination, doc: dict[str, Any], files: list[tuple[Path, str]], material: SigningMaterial | None,
                           redact: Redactor, uri: str, ctx: RunContext) -> None:
    """The card, then the signature (with signing material), then the manifest: what makes the prefix a finished model."""
    card_text = _guarded(model_card.render(doc, output_uri=uri, branch=_branch(ctx.job.spec.output, uri)), redact, "model card", ctx)
    card = destination.put_text(MODEL_CARD, card_text)
    doc["files"] = sorted([*doc["files"], _entry(card)], key=lambda f: f["path"])
    manifest_text = _guarded(manifest_mod.dumps(doc), redact, "manifest", ctx)
    if material is not None:
        # What is signed is what is published, the card and the manifest included; the signature goes before the manifest.
        folder = signing_mod.stage(ctx.workdir / "signing" / "model", files, {MODEL_CARD: card_text, MANIFEST: manifest_text})
        signature = ctx.workdir / "signing" / SIGNATURE
        signing_mod.sign(folder, signature, material)
        destination.upload([(signature, SIGNATURE)])
        ctx.log.info("publish: signed %d files with model-signing (%s, public key sha256 %s)", len(files) + 2, material.method, material.public_key_sha256)
    destination.put_text(MANIFEST, manifest_text)


def _record_destination(ctx: RunContext, destination: Destination, published: PublishedDestination, rejected: bool, uri: str) -> None:
    """Where the model went, on the context; a rejected one fails the job (QualityGateFailed) once it is kept."""
    spec = ctx.job.spec
    if rejected:
        ctx.rejected_uri = published.reference  # a Hub repository at its commit, an OCI image by its digest, else the prefix
        raise QualityGateFailed(f"the compressed model missed the quality gate ({'; '.join(ctx.gate_failures)}); kept for inspection at {uri}, not published to {spec.output.uri}")
    ctx.output_uri = uri
    ctx.manifest_uri = destination.uri_of(MANIFEST)
    ctx.destination = published
    if published.kind == "hf":
        ctx.log.info("publish: commit %s on branch %s of %s", published.commit, published.revision, uri)


def _branch(output, uri: str) -> str | None:  # noqa: ANN001
    """The Hub branch an hf:// output is committed to (for the card's instructions), else None."""
    if not uri.startswith("hf://"):
        return None
    return output.hugging_face.revision if output.hugging_face is not None else "main"


def _tasks(ctx: RunContext) -> dict[str, Any] | None:
    """Every lm-eval score (the status and the termination message carry a bounded share of them)."""
    if not ctx.task_scores:
        return None
    return {**(ctx.task_summary or {}), "scores": [s.wire() for s in ctx.task_scores]}


def _calibration_used(ctx: RunContext) -> dict[str, Any] | None:
    """What the calibration stage actually used: sample counts, and the Hub dataset's commit."""
    if ctx.calibration is None:
        return None
    used: dict[str, Any] = {"samples": len(ctx.calibration), "heldOut": len(ctx.holdout) if ctx.holdout is not None else 0}
    if ctx.calibration_revision:
        used["resolvedRevision"] = ctx.calibration_revision
    return used
