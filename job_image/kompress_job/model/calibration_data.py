"""Calibration text: read rows from wherever spec.calibration.uri says, render them, pick and tokenize.

    builtin://chatterbot   English dialogues from the chatterbot-corpus package (BSD), shipped in the image
    hf://ORG/NAME          a Hub dataset: the data files of one split (parquet, JSON lines), fetched with
                           the same Hub settings and token handling as models
    s3://BUCKET/KEY.jsonl  a JSON-lines file in S3 (.jsonl.gz too)
    file:///PATH.jsonl     or /PATH.jsonl: a JSON-lines file on a volume

A row holds plain text or chat `messages` (rendered with the model's chat template). Rows are
shuffled with the seed; the first usable ones become calibration samples, the next ones the
held-out evaluation rows (never used for calibration, and never the same text). Zero usable rows
is NoCalibrationSamples with the reasons counted; a source that isn't there is CalibrationNotFound.
Must not: import torch, or keep more rows in memory than the source itself needs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kompress_api.v1alpha1 import Calibration, Evaluation

from kompress_job.errors import CalibrationNotFound, NoCalibrationSamples

BUILTIN_SETS = ("chatterbot",)
DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".jsonl.gz", ".json.gz")


# ---------------------------------------------------------------------------------------------
# Sources -> rows
# ---------------------------------------------------------------------------------------------


def builtin_rows(name: str, *, chat: bool) -> list[dict[str, Any]]:
    """The built-in set as rows: chat `messages` (user/assistant turns) when the model has a chat template, else `text`."""
    if name != "chatterbot":
        raise CalibrationNotFound(f"no built-in calibration set '{name}'; built-in sets: {', '.join(BUILTIN_SETS)}")
    from importlib import resources

    import yaml

    try:
        folder = resources.files("chatterbot_corpus") / "data" / "english"
    except ModuleNotFoundError:
        raise CalibrationNotFound("builtin://chatterbot needs the chatterbot-corpus package, which this installation lacks") from None
    rows: list[dict[str, Any]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yml"):
            continue
        doc = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
        for conversation in doc.get("conversations") or []:
            turns = [str(t).strip() for t in conversation if t is not None and str(t).strip()]
            if len(turns) < 2:
                continue
            if chat:
                rows.append({"messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]})
            else:
                rows.append({"text": "\n".join(turns)})
    return rows


def read_jsonl(path: Path) -> tuple[list[Any], Counter]:
    """Rows of a JSON-lines file; lines that are not JSON objects (or not UTF-8) are counted, not fatal.

    A byte-order mark (what Windows editors and Excel put first) is not part of the first row: UTF-8-SIG."""
    opener = gzip.open if path.name.endswith(".gz") else open
    rows: list[Any] = []
    bad: Counter = Counter()
    with opener(path, "rb") as f:  # type: ignore[operator]
        for number, raw in enumerate(f):
            try:
                line = raw.decode("utf-8-sig" if number == 0 else "utf-8").strip()
            except UnicodeDecodeError:
                bad["lines that are not UTF-8 text"] += 1
                continue
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                bad["lines that are not valid JSON"] += 1
    return rows, bad


def split_files(paths: Sequence[str], split: str) -> list[str]:
    """The data files of `split` in a dataset repository, by the Hub's naming conventions.

    data/train-00000-of-00003.parquet, train.jsonl, train/part-0.parquet all belong to `train`;
    data/train_sft-00000.parquet belongs to `train_sft`, not `train`. A repository whose files
    name no split at all is one `train` split.
    """
    data = sorted(p for p in paths if p.endswith(DATA_SUFFIXES))

    def belongs(path: str, name: str) -> bool:
        parts = path.split("/")
        return name in parts[:-1] or re.match(rf"^{re.escape(name)}([-.]|$)", parts[-1]) is not None

    chosen = [p for p in data if belongs(p, split)]
    if chosen or split != "train":
        return chosen
    common = ("train", "test", "validation", "valid", "dev", "eval")
    names_splits = any(belongs(p, s) for p in data for s in common) or any(re.search(r"-\d+-of-\d+", p) for p in data)
    return [] if names_splits else data


def _hub_rows(cal: Calibration, workdir: Path, env: Mapping[str, str], commit: str | None) -> tuple[Any, str]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import disable_progress_bars

    from kompress_job.io.sources.hub import hub_api, hub_call, hub_settings, list_files, repo_id_of

    disable_progress_bars()
    settings = hub_settings(cal.hugging_face, env, what="calibration data")
    repo_id = repo_id_of(cal.uri)
    api = hub_api(settings)
    call = dict(uri=cal.uri, what="dataset", settings=settings, not_found=CalibrationNotFound, revision=cal.revision)
    commit = commit or _dataset_commit(cal, api, settings)
    entries = hub_call(lambda: list_files(api, repo_id, commit, repo_type="dataset"), **call)
    split = cal.split or "train"
    files = split_files([e.path for e in entries], split)
    if not files:
        data = [e.path for e in entries if e.path.endswith(DATA_SUFFIXES)]
        found = ", ".join(data[:5]) or "no parquet or JSON-lines files"
        raise CalibrationNotFound(f"no data files for split '{split}' in {cal.uri} (found: {found}); set spec.calibration.split")
    dest = workdir / "hub" / repo_id.replace("/", "--")
    local = [
        Path(hub_call(lambda f=f: hf_hub_download(repo_id, f, repo_type="dataset", revision=commit, local_dir=dest, endpoint=settings.endpoint, token=settings.token or False), **call))
        for f in files
    ]
    import datasets

    datasets.disable_progress_bars()
    cache = str(workdir / "datasets-cache")
    if all(p.name.endswith(".parquet") for p in local):
        return datasets.Dataset.from_parquet([str(p) for p in local], cache_dir=cache), commit
    rows: list[Any] = []
    for path in local:
        rows.extend(read_jsonl(path)[0] if path.name.endswith((".jsonl", ".jsonl.gz")) else _json_rows(path))
    return rows, commit


def _dataset_commit(cal: Calibration, api: Any, settings: Any) -> str:
    """The commit a Hub dataset's spec.calibration.revision (default main) resolves to."""
    from kompress_job.io.sources.hub import hub_call, repo_id_of, resolve_commit

    return hub_call(
        lambda: resolve_commit(api, repo_id_of(cal.uri), cal.revision, repo_type="dataset"),
        uri=cal.uri,
        what="dataset",
        settings=settings,
        not_found=CalibrationNotFound,
        revision=cal.revision,
    )


def _json_rows(path: Path) -> list[Any]:
    try:
        doc = json.loads(path.read_bytes().decode("utf-8-sig"))
    except ValueError as err:  # UnicodeDecodeError is one too: the file's, so never worth a retry
        raise NoCalibrationSamples(f"calibration file {path.name} is not UTF-8 JSON: {err}") from None
    if isinstance(doc, dict):  # {"data": [...]} or {"rows": [...]}, as some datasets ship
        doc = next((v for v in doc.values() if isinstance(v, list)), [])
    return doc if isinstance(doc, list) else []


def _s3_file(cal: Calibration, workdir: Path, env: Mapping[str, str]) -> Path:
    from botocore.exceptions import BotoCoreError, ClientError

    from kompress_job.io.s3client import make_client, missing_object_message, parse_s3_uri, raise_storage_error
    from kompress_job.io.download import DownloadItem
    from kompress_job.io.s3objects import head_object, TransferSettings
    from kompress_job.io.transfer import S3Transfer

    loc = parse_s3_uri(cal.uri)
    client = make_client(cal.s3, env, "calibration")
    dest = workdir / "s3" / loc.key.rsplit("/", 1)[-1]
    try:
        remote = head_object(client, loc.bucket, loc.key)
        if remote is None:
            raise CalibrationNotFound(missing_object_message(client, cal.uri, "calibration data"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        with S3Transfer(client, TransferSettings(workers=4)) as transfer:
            transfer.download_objects([DownloadItem(loc.bucket, remote, dest, dest.name)])
    except (ClientError, BotoCoreError) as exc:
        raise_storage_error(exc, what="calibration data", uri=cal.uri, not_found=CalibrationNotFound, endpoint=cal.s3.endpoint if cal.s3 else None)
        raise
    return dest


@dataclass(frozen=True)
class LoadedRows:
    rows: Any  # a list or a datasets.Dataset
    unreadable: Counter  # lines that could not be read, by reason
    revision: str | None = None  # the commit of a Hub dataset the rows came from


def load_rows(cal: Calibration, workdir: Path, env: Mapping[str, str], *, chat: bool, revision: str | None = None) -> LoadedRows:
    """The rows of the calibration source. `revision`: the commit preflight pinned a Hub dataset to (else
    spec.calibration.revision is resolved here)."""
    uri = cal.uri
    if uri.startswith("builtin://"):
        return LoadedRows(builtin_rows(uri[len("builtin://"):], chat=chat), Counter())
    if uri.startswith("hf://"):
        rows, commit = _hub_rows(cal, workdir, env, revision)
        return LoadedRows(rows, Counter(), commit)
    if uri.startswith("s3://"):
        return LoadedRows(*read_jsonl(_s3_file(cal, workdir, env)))
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
    if not path.is_file():
        raise CalibrationNotFound(f"no calibration file at {path} (is its volume mounted?)")
    if path.name.endswith((".json",)):
        return LoadedRows(_json_rows(path), Counter())
    return LoadedRows(*read_jsonl(path))


def check_source(cal: Calibration, env: Mapping[str, str]) -> str | None:
    """Cheap existence and credential check, for preflight: fail in seconds, not after the model download.
    Returns the commit a Hub dataset's revision resolves to (None for other sources)."""
    uri = cal.uri
    if uri.startswith("builtin://"):
        if uri[len("builtin://"):] not in BUILTIN_SETS:
            raise CalibrationNotFound(f"no built-in calibration set '{uri}'; built-in sets: {', '.join('builtin://' + s for s in BUILTIN_SETS)}")
        return
    if uri.startswith("hf://"):
        from kompress_job.io.sources.hub import hub_api, hub_settings

        settings = hub_settings(cal.hugging_face, env, what="calibration data")
        return _dataset_commit(cal, hub_api(settings), settings)
    if uri.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        from kompress_job.io.s3client import make_client, missing_object_message, parse_s3_uri, raise_storage_error
        from kompress_job.io.s3objects import head_object

        loc = parse_s3_uri(uri)
        client = make_client(cal.s3, env, "calibration", max_attempts=2, connect_timeout=5)
        try:
            if head_object(client, loc.bucket, loc.key) is None:
                raise CalibrationNotFound(missing_object_message(client, uri, "calibration data"))
        except (ClientError, BotoCoreError) as exc:
            raise_storage_error(exc, what="calibration data", uri=uri, not_found=CalibrationNotFound, endpoint=cal.s3.endpoint if cal.s3 else None)
        return
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
    if not path.is_file():
        raise CalibrationNotFound(f"no calibration file at {path} (is its volume mounted?)")


def source_version(cal: Calibration, env: Mapping[str, str], revision: str | None = None) -> str | None:
    """What names this exact version of the calibration data, without reading it: a Hub dataset's commit (`revision`,
    as preflight pinned it, else resolved), an S3 object's ETag and size (one HEAD), a file's size and mtime, the
    built-in set's package version. None when it cannot be told (the data is then never taken from a cache)."""
    uri = cal.uri
    if uri.startswith("builtin://"):
        from importlib import metadata

        try:
            return f"{uri}@chatterbot-corpus=={metadata.version('chatterbot-corpus')}"
        except metadata.PackageNotFoundError:
            return None
    if uri.startswith("hf://"):
        if revision:
            return revision
        from kompress_job.io.sources.hub import hub_api, hub_settings

        settings = hub_settings(cal.hugging_face, env, what="calibration data")
        return _dataset_commit(cal, hub_api(settings), settings)
    if uri.startswith("s3://"):
        from botocore.exceptions import BotoCoreError, ClientError

        from kompress_job.io.s3client import make_client, parse_s3_uri
        from kompress_job.io.s3objects import head_object

        loc = parse_s3_uri(uri)
        try:
            remote = head_object(make_client(cal.s3, env, "calibration"), loc.bucket, loc.key)
        except (ClientError, BotoCoreError):
            return None  # the read that follows reports what is wrong
        if remote is None or not remote.etag:
            return None
        return f"etag:{remote.etag}:{remote.size}"
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
    try:
        st = path.stat()
    except OSError:
        return None
    return f"file:{st.st_size}:{st.st_mtime_ns}"


# ---------------------------------------------------------------------------------------------
# Rows -> samples
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    text: str
    add_special_tokens: bool  # plain text gets BOS etc.; a chat template already wrote them


def render_row(row: Any, *, column: str | None, fmt: str, tokenizer: Any) -> Rendered | str:
    """The text of one row, or why the row is unusable (a short phrase, counted in the error message)."""
    if not isinstance(row, Mapping):
        return "rows that are not JSON objects"
    name = column or ("messages" if "messages" in row else "text")
    if name not in row or row[name] is None:
        return f"rows without a '{name}' field"
    value = row[name]
    kind = fmt if fmt != "auto" else ("text" if isinstance(value, str) else "messages" if isinstance(value, list) else "other")
    if kind == "text":
        if not isinstance(value, str):
            return f"rows whose '{name}' is not a string (format: text)"
        if not value.strip():
            return "rows with empty text"
        return Rendered(value, True)
    if kind == "messages":
        if not isinstance(value, list) or not value or not all(isinstance(m, Mapping) and isinstance(m.get("role"), str) and "content" in m for m in value):
            return f"rows whose '{name}' is not a list of {{role, content}} messages"
        if not getattr(tokenizer, "chat_template", None):
            return "rows of chat messages, but the model's tokenizer has no chat template (use text rows, or a model with a chat template)"
        try:
            text = tokenizer.apply_chat_template([dict(m) for m in value], tokenize=False)
        except Exception as exc:  # noqa: BLE001 - a template may refuse a conversation (roles, order)
            return f"rows the chat template refused ({type(exc).__name__})"
        return Rendered(text, False) if text.strip() else "rows with empty text"
    return f"rows whose '{name}' is neither text nor a list of messages"


def split_counts(usable: int, samples: int, holdout: int) -> tuple[int, int]:
    """How many usable rows go to calibration and to held-out evaluation.

    Enough rows: both get what they asked for. Too few: evaluation gets at most half, calibration the rest.
    """
    if usable >= samples + holdout:
        return samples, holdout
    held = min(holdout, usable // 2)
    return min(samples, usable - held), held


@dataclass
class Prepared:
    calibration: Any  # datasets.Dataset: input_ids, attention_mask
    holdout: Any  # datasets.Dataset: text, input_ids, attention_mask
    calibration_texts: list[str]  # the rendered text of each calibration sample, before truncation
    rows_seen: int
    skipped: Counter = field(default_factory=Counter)


def _describe(skipped: Counter, seen: int) -> str:
    return "; ".join(f"{n} {reason}" for reason, n in skipped.most_common()) or f"{seen} rows"


def prepare(
    rows: Any,
    cal: Calibration,
    evaluation: Evaluation,
    tokenizer: Any,
    *,
    unreadable: Counter | None = None,
) -> Prepared:
    """Shuffle `rows` with the seed, render until there are enough samples, split, tokenize."""
    import datasets
    import numpy as np

    holdout_wanted = evaluation.samples if evaluation.enabled else 0
    wanted = cal.samples + holdout_wanted
    cal_len = cal.max_sequence_length
    eval_len = evaluation.sequence_length(cal_len)
    order = np.random.default_rng(cal.seed).permutation(len(rows))
    skipped: Counter = Counter(unreadable or {})
    texts: list[Rendered] = []
    seen_texts: set[bytes] = set()
    seen = 0
    for index in order:
        if len(texts) >= wanted:
            break
        seen += 1
        rendered = render_row(rows[int(index)], column=cal.column, fmt=cal.format, tokenizer=tokenizer)
        if isinstance(rendered, str):
            skipped[rendered] += 1
            continue
        key = hashlib.sha1(rendered.text.encode()).digest()
        if key in seen_texts:
            skipped["duplicate rows"] += 1
            continue
        seen_texts.add(key)
        texts.append(rendered)
    if not texts:
        total = len(rows) + sum((unreadable or {}).values())
        raise NoCalibrationSamples(f"0 usable rows of {total} in {cal.uri}: {_describe(skipped, total)}")
    n_cal, n_held = split_counts(len(texts), cal.samples, holdout_wanted)

    def tokenize(items: list[Rendered], max_length: int) -> dict[str, list[list[int]]]:
        out: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": []}
        for item in items:
            enc = tokenizer(item.text, truncation=True, max_length=max_length, add_special_tokens=item.add_special_tokens)
            out["input_ids"].append(list(enc["input_ids"]))
            out["attention_mask"].append(list(enc["attention_mask"]))
        return out

    calibration = datasets.Dataset.from_dict(tokenize(texts[:n_cal], cal_len))
    held = texts[n_cal : n_cal + n_held]
    holdout = datasets.Dataset.from_dict({"text": [t.text for t in held], **tokenize(held, eval_len)})
    return Prepared(calibration=calibration, holdout=holdout, calibration_texts=[t.text for t in texts[:n_cal]], rows_seen=seen, skipped=skipped)


# ---------------------------------------------------------------------------------------------
# Prepared samples on disk (the model cache keeps them: kompress_job.io.cache.artifacts)
# ---------------------------------------------------------------------------------------------

PREPARED_FILE = "calibration.json"
# Bumped whenever prepare() would pick, render or tokenize differently: older stored samples are then not reused.
PREPARED_FORMAT = 1


def save_prepared(prepared: Prepared, folder: Path, *, revision: str | None = None) -> Path:
    """Everything a later run takes from `prepare` (and the Hub commit the rows came from), as one JSON file."""
    doc = {
        "format": PREPARED_FORMAT,
        "calibration": _columns(prepared.calibration, ("input_ids", "attention_mask")),
        "holdout": _columns(prepared.holdout, ("text", "input_ids", "attention_mask")),
        "calibration_texts": prepared.calibration_texts,
        "rows_seen": prepared.rows_seen,
        "skipped": dict(prepared.skipped),
        "revision": revision,
    }
    path = folder / PREPARED_FILE
    path.write_text(json.dumps(doc, separators=(",", ":")))
    return path


def _columns(dataset: Any, names: Sequence[str]) -> dict[str, list[Any]]:
    data = dataset.to_dict()
    return {name: [list(v) if isinstance(v, (list, tuple)) else v for v in data.get(name, [])] for name in names}


def load_prepared(folder: Path) -> tuple[Prepared, str | None]:
    """What save_prepared wrote: the samples as `prepare` returned them, and the revision."""
    import datasets

    doc = json.loads((folder / PREPARED_FILE).read_text())
    if doc.get("format") != PREPARED_FORMAT:
        raise ValueError(f"{folder / PREPARED_FILE} is format {doc.get('format')}, not {PREPARED_FORMAT}")
    prepared = Prepared(
        calibration=datasets.Dataset.from_dict(doc["calibration"]),
        holdout=datasets.Dataset.from_dict(doc["holdout"]),
        calibration_texts=doc["calibration_texts"],
        rows_seen=doc["rows_seen"],
        skipped=Counter(doc["skipped"]),
    )
    return prepared, doc.get("revision")
