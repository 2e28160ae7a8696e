"""The original model's side of the comparison, recorded before compression so the original can be released.

    record(model, rows, folder)      run the original over `rows` and write, for every predicted position, its loss,
                                     its top-k next tokens with their log-probabilities and the log of the mass
                                     outside them (the "tail"); for every tap (fidelity_passes), the sketch of its
                                     output. One safetensors file per batch, so the record never has to fit in memory
    BaselineRecord                   what was recorded and where: the index (record.json) and the batch files
    load_record(folder, rows)        a record written before (by this run, or kept in the model cache), read back
    rows_digest(rows)                SHA-256 of the rows' token ids: what a cached record must have been made from

The record keeps only the original's top-k tokens (TOP_K = 32 by default); fidelity_comparison says what that
does to the KL divergence.

Owns: the record's files in the folder it is given, and their format (RECORD_FORMAT). Must not: know about stages,
the job spec, the model cache or object stores (the baseline stage does), or compute the comparison.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kompress_job.model.fidelity_passes import Runner, build_batches, log_probs_at, plan_batches, tail_log_mass

TOP_K = 32
RECORD_FORMAT = 1


@dataclass
class BaselineRecord:
    """The original model's figures on the held-out rows, on disk in `folder` (batch-NNNNN.safetensors)."""

    folder: Path
    top_k: int
    vocab_size: int
    rows: list[list[int]]
    plan: list[list[int]]
    pad_id: int
    samples: int
    tokens: int
    taps: list[dict[str, Any]] = field(default_factory=list)  # name, layer, kind, moe
    seconds: float | None = None

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("batch-*.safetensors"))

    def batch_file(self, index: int) -> Path:
        return self.folder / f"batch-{index:05d}.safetensors"

    def write_index(self) -> None:
        doc = {k: v for k, v in self.__dict__.items() if k not in ("folder", "rows")}
        doc["format"] = RECORD_FORMAT
        (self.folder / "record.json").write_text(json.dumps(doc))


def record(model: Any, rows: Sequence[Sequence[int]], folder: Path, *, pad_id: int = 0, top_k: int = TOP_K, on_batch: Callable[[int, int], None] | None = None) -> BaselineRecord:
    """Run the original over `rows` (token id lists) and write what the comparison needs to `folder`."""
    import time

    import torch
    from safetensors.torch import save_file

    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("batch-*.safetensors"):
        stale.unlink()
    vocab = _vocab_size(model)
    k = min(top_k, vocab)
    usable = [list(r) for r in rows if len(r) >= 2]
    with Runner(model) as runner:
        plan = plan_batches([len(r) for r in usable], vocab, budget=runner.logits_budget)
        batches = build_batches(usable, plan, pad_id)
        rec = BaselineRecord(folder=folder, top_k=k, vocab_size=vocab, rows=usable, plan=plan, pad_id=pad_id, samples=len(usable), tokens=0)
        rec.taps = [{"name": t.name, "layer": t.layer, "kind": t.kind, "moe": t.moe} for t in runner.taps]
        for index, batch in enumerate(batches):
            logits = runner.logits(batch)
            targets = batch.targets.to(logits.device)
            nll, ids, logp, tail = [], [], [], []
            for start, lp in log_probs_at(logits, batch.predicted):
                t = targets[start : start + lp.shape[0]]
                nll.append(-lp.gather(1, t[:, None]).squeeze(1).cpu())
                top = lp.topk(k, dim=-1)
                ids.append(top.indices.int().cpu())
                logp.append(top.values.cpu())
                tail.append(tail_log_mass(lp, top.indices).cpu())
            del logits
            tensors = {"nll": torch.cat(nll), "topk_ids": torch.cat(ids), "topk_logp": torch.cat(logp), "tail_logp": torch.cat(tail)}
            tensors.update({f"tap.{name}": value.contiguous() for name, value in runner.captured.items()})
            save_file(tensors, str(rec.batch_file(index)))
            rec.tokens += int(tensors["nll"].numel())
            if on_batch:
                on_batch(index + 1, len(batches))
    rec.seconds = round(time.monotonic() - started, 3)
    rec.write_index()
    return rec


def load_record(folder: Path, rows: Sequence[Sequence[int]]) -> BaselineRecord:
    """The record `record` wrote to `folder` for these `rows` (its index says everything but the rows, which the
    caller holds). ValueError when the folder is not such a record, or not of these rows."""
    try:
        doc = json.loads((folder / "record.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"no baseline record in {folder}: {err}") from None
    if doc.get("format") != RECORD_FORMAT:
        raise ValueError(f"the baseline record in {folder} is format {doc.get('format')}, not {RECORD_FORMAT}")
    usable = [list(r) for r in rows if len(r) >= 2]
    rec = BaselineRecord(
        folder=folder, top_k=doc["top_k"], vocab_size=doc["vocab_size"], rows=usable, plan=doc["plan"], pad_id=doc["pad_id"],
        samples=doc["samples"], tokens=doc["tokens"], taps=doc.get("taps") or [], seconds=doc.get("seconds"),
    )
    if rec.samples != len(usable) or sorted(i for batch in rec.plan for i in batch) != list(range(len(usable))):
        raise ValueError(f"the baseline record in {folder} is of {rec.samples} rows, not of these {len(usable)}")
    if any(not rec.batch_file(i).is_file() for i in range(len(rec.plan))):
        raise ValueError(f"the baseline record in {folder} lacks some of its {len(rec.plan)} batch files")
    return rec


def rows_digest(rows: Sequence[Sequence[int]]) -> str:
    """SHA-256 of the token ids of `rows`, in order: what a stored record must have been made from."""
    import hashlib

    h = hashlib.sha256()
    for row in rows:
        h.update(len(row).to_bytes(4, "little"))
        h.update(b"".join(int(t).to_bytes(4, "little", signed=True) for t in row))
    return h.hexdigest()


def _vocab_size(model: Any) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "out_features", None):
        return int(head.out_features)
    return int(model.config.vocab_size)

