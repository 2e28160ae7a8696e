"""Calibration data: every source and row format, the held-out split, and the failures a user can act on."""

from __future__ import annotations

import gzip
import json

import pytest

from kompress_api.v1alpha1 import Calibration, Evaluation, S3Access
from kompress_job.model import calibration_data
from kompress_job.errors import AccessDenied, CalibrationNotFound, NoCalibrationSamples
from kompress_testing.jobs import CHAT_TEMPLATE


@pytest.fixture(scope="module")
def tokenizer(tokenizer_files):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_files))


@pytest.fixture(scope="module")
def chat_tokenizer(tokenizer_files):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_files))
    tok.chat_template = CHAT_TEMPLATE
    return tok


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def prepare(uri, tokenizer, tmp_path, env=None, *, samples=8, held=4, **cal):
    calibration = Calibration(uri=uri, samples=samples, max_sequence_length=16, **cal)
    loaded = calibration_data.load_rows(calibration, tmp_path / "work", env or {}, chat=bool(getattr(tokenizer, "chat_template", None)))
    return calibration_data.prepare(loaded.rows, calibration, Evaluation(samples=held), tokenizer, unreadable=loaded.unreadable)


def decoded(tokenizer, dataset):
    return [tokenizer.decode(ids) for ids in dataset["input_ids"]]


@pytest.mark.unit
class TestPureParts:
    def test_split_files_follows_the_hubs_naming(self):
        files = [
            "README.md",
            "data/train_sft-00000-of-00003-a.parquet",
            "data/train_sft-00001-of-00003-b.parquet",
            "data/test_sft-00000-of-00001.parquet",
            "data/train_gen-00000-of-00001.parquet",
        ]
        assert calibration_data.split_files(files, "train_sft") == files[1:3]
        assert calibration_data.split_files(files, "test_sft") == [files[3]]
        assert calibration_data.split_files(files, "train") == []  # train_sft is not train
        assert calibration_data.split_files(["train.jsonl", "test.jsonl"], "train") == ["train.jsonl"]
        assert calibration_data.split_files(["train/0.parquet", "train/1.parquet", "validation/0.parquet"], "train") == ["train/0.parquet", "train/1.parquet"]
        assert calibration_data.split_files(["data.jsonl"], "train") == ["data.jsonl"]  # one unnamed file is the train split
        assert calibration_data.split_files(["data.jsonl"], "test") == []

    @pytest.mark.parametrize(
        ("usable", "expected"),
        [(100, (8, 4)), (12, (8, 4)), (10, (6, 4)), (6, (3, 3)), (1, (1, 0))],
    )
    def test_too_few_rows_give_evaluation_at_most_half(self, usable, expected):
        assert calibration_data.split_counts(usable, 8, 4) == expected
        calib, held = calibration_data.split_counts(usable, 8, 4)
        assert calib + held <= usable


def test_builtin_dialogues_become_chat_samples_and_disjoint_held_out_rows(chat_tokenizer, tmp_path):
    got = prepare("builtin://chatterbot", chat_tokenizer, tmp_path)

    assert len(got.calibration) == 8 and len(got.holdout) == 4
    assert set(got.calibration.column_names) == {"input_ids", "attention_mask"}
    assert all(1 <= len(ids) <= 16 for ids in got.calibration["input_ids"])
    assert all(text.startswith("<|user|>") for text in decoded(chat_tokenizer, got.calibration))  # rendered by the template
    assert not set(got.holdout["text"]) & set(got.calibration_texts)
    assert [chat_tokenizer.decode(ids) for ids in got.calibration["input_ids"]] == [chat_tokenizer.decode(chat_tokenizer(t)["input_ids"][:16]) for t in got.calibration_texts]


def test_builtin_without_a_chat_template_falls_back_to_plain_dialogue_text(tokenizer, tmp_path):
    got = prepare("builtin://chatterbot", tokenizer, tmp_path)
    assert len(got.calibration) == 8
    assert not any("<|user|>" in t for t in decoded(tokenizer, got.calibration))


def test_the_seed_decides_the_sample_and_a_rerun_picks_the_same(chat_tokenizer, tmp_path):
    first = prepare("builtin://chatterbot", chat_tokenizer, tmp_path, seed=7)
    again = prepare("builtin://chatterbot", chat_tokenizer, tmp_path, seed=7)
    other = prepare("builtin://chatterbot", chat_tokenizer, tmp_path, seed=8)
    assert first.calibration["input_ids"] == again.calibration["input_ids"]
    assert first.holdout["text"] == again.holdout["text"]
    assert first.calibration["input_ids"] != other.calibration["input_ids"]


def test_held_out_rows_never_repeat_a_calibration_text(chat_tokenizer, tmp_path):
    rows = [{"text": "the same sentence"}] * 30 + [{"text": f"sentence number {i}"} for i in range(10)]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    got = prepare(str(path), chat_tokenizer, tmp_path, samples=6, held=4)
    assert not set(got.calibration_texts) & set(got.holdout["text"])
    assert len(set(got.calibration_texts)) == len(got.calibration_texts) == 6
    assert got.skipped["duplicate rows"] >= 1


def test_jsonl_with_plain_text_and_with_chat_messages(chat_tokenizer, tmp_path):
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": f"plain line {i}"} for i in range(20)])
    got = prepare(f"file://{text}", chat_tokenizer, tmp_path)
    assert all(t.startswith("plain line") for t in decoded(chat_tokenizer, got.calibration))

    chats = [{"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]} for i in range(20)]
    msgs = write_jsonl(tmp_path / "chat.jsonl.gz", [])
    with gzip.open(msgs, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in chats))
    got = prepare(str(msgs), chat_tokenizer, tmp_path)
    assert all(t.startswith("<|user|>question") for t in decoded(chat_tokenizer, got.calibration))


def test_column_and_format_are_respected(chat_tokenizer, tmp_path):
    rows = [{"prompt": f"custom column {i}", "text": "not this one"} for i in range(20)]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    got = prepare(str(path), chat_tokenizer, tmp_path, column="prompt", format="text")
    assert all(t.startswith("custom column") for t in decoded(chat_tokenizer, got.calibration))


def test_chat_messages_without_a_chat_template_is_no_calibration_samples(tokenizer, tmp_path):
    chats = [{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(5)]
    path = write_jsonl(tmp_path / "chat.jsonl", chats)
    with pytest.raises(NoCalibrationSamples, match="0 usable rows of 5 .*tokenizer has no chat template"):
        prepare(str(path), tokenizer, tmp_path)


def test_rows_that_hold_nothing_usable_are_counted_in_the_error(chat_tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", ["not json", {"text": ""}, {"text": 3}, {"other": "x"}, [1, 2]])
    with pytest.raises(NoCalibrationSamples) as err:
        prepare(str(path), chat_tokenizer, tmp_path)
    message = err.value.message
    for phrase in ("1 lines that are not valid JSON", "1 rows with empty text", "rows without a 'text' field", "rows that are not JSON objects"):
        assert phrase in message


def test_a_byte_order_mark_does_not_cost_the_first_row_and_bad_bytes_are_counted(chat_tokenizer, tmp_path):
    """What Windows editors and Excel write: a UTF-8 BOM before the first row, sometimes a Latin-1 line."""
    rows = [{"text": f"row number {i}"} for i in range(12)]
    path = tmp_path / "bom.jsonl"
    path.write_bytes("\ufeff".encode() + "".join(json.dumps(r) + "\n" for r in rows).encode() + b'{"text": "caf\xe9"}\n')
    loaded = calibration_data.load_rows(Calibration(uri=str(path)), tmp_path / "work", {}, chat=False)
    assert loaded.rows == rows
    assert loaded.unreadable == {"lines that are not UTF-8 text": 1}

    whole = tmp_path / "rows.json"
    whole.write_bytes("\ufeff".encode() + json.dumps(rows).encode())
    assert calibration_data.load_rows(Calibration(uri=str(whole)), tmp_path / "work", {}, chat=False).rows == rows
    whole.write_text('[{"text": "unterminated"')
    with pytest.raises(NoCalibrationSamples, match="rows.json is not UTF-8 JSON"):  # the file's fault: not retried
        calibration_data.load_rows(Calibration(uri=str(whole)), tmp_path / "work", {}, chat=False)


def test_a_missing_file_or_set_is_calibration_not_found(tokenizer, tmp_path):
    with pytest.raises(CalibrationNotFound, match="no calibration file at /data/absent.jsonl"):
        calibration_data.check_source(Calibration(uri="/data/absent.jsonl"), {})
    with pytest.raises(CalibrationNotFound, match="builtin://chatterbot"):
        calibration_data.check_source(Calibration(uri="builtin://wikipedia"), {})


@pytest.mark.integration
def test_jsonl_in_s3(s3, bucket, chat_tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "calib.jsonl", [{"text": f"from the bucket {i}"} for i in range(20)])
    s3.client().upload_file(str(path), bucket, "data/calib.jsonl")
    access = s3.access()
    env = s3.env("calibration")
    got = prepare(f"s3://{bucket}/data/calib.jsonl", chat_tokenizer, tmp_path, env, s3=access)
    assert all(t.startswith("from the bucket") for t in decoded(chat_tokenizer, got.calibration))

    with pytest.raises(CalibrationNotFound, match="nothing at"):
        calibration_data.check_source(Calibration(uri=f"s3://{bucket}/data/absent.jsonl", s3=S3Access(**access)), env)
    with pytest.raises(CalibrationNotFound, match="bucket 'no-such-bucket' does not exist"):
        calibration_data.check_source(Calibration(uri="s3://no-such-bucket/data/x.jsonl", s3=S3Access(**access)), env)
    with pytest.raises(AccessDenied):
        calibration_data.check_source(Calibration(uri=f"s3://{bucket}/data/calib.jsonl", s3=S3Access(**access)), s3.env("calibration", secret_access_key="nope"))


@pytest.mark.integration
def test_hub_dataset_split_from_parquet_files(hub, chat_tokenizer, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = tmp_path / "ultrachat-mini"
    (repo / "data").mkdir(parents=True)
    chats = [[{"role": "user", "content": f"sft question {i}"}, {"role": "assistant", "content": f"sft answer {i}"}] for i in range(30)]
    pq.write_table(pa.table({"prompt": [c[0]["content"] for c in chats], "messages": chats}), repo / "data" / "train_sft-00000-of-00001.parquet")
    pq.write_table(pa.table({"messages": [[{"role": "user", "content": "generation split"}]] * 5}), repo / "data" / "train_gen-00000-of-00001.parquet")
    (repo / "README.md").write_text("---\nlicense: mit\n---\n")
    hub.add_repo("HuggingFaceH4/ultrachat-mini", repo, repo_type="dataset")

    cal = {"hugging_face": {"endpoint": hub.endpoint}}
    got = prepare("hf://HuggingFaceH4/ultrachat-mini", chat_tokenizer, tmp_path, split="train_sft", column="messages", **cal)
    assert len(got.calibration) == 8 and len(got.holdout) == 4
    assert all(t.startswith("<|user|>sft question") for t in decoded(chat_tokenizer, got.calibration))
    assert not any("train_gen" in p for p in hub.downloaded())  # only the split asked for was fetched

    with pytest.raises(CalibrationNotFound, match="no data files for split 'train'"):
        prepare("hf://HuggingFaceH4/ultrachat-mini", chat_tokenizer, tmp_path, **cal)
    with pytest.raises(CalibrationNotFound, match="no dataset hf://HuggingFaceH4/absent"):
        calibration_data.check_source(Calibration(uri="hf://HuggingFaceH4/absent", hugging_face={"endpoint": hub.endpoint}), {})


@pytest.mark.integration
def test_a_hub_dataset_is_read_at_the_pinned_revision_and_its_commit_reported(hub, chat_tokenizer, tmp_path):
    def dataset(folder, word):
        folder.mkdir()
        (folder / "train.jsonl").write_text("".join(json.dumps({"text": f"{word} sentence number {i}"}) + "\n" for i in range(20)))
        return folder

    v1 = hub.add_repo("acme/calib", dataset(tmp_path / "v1", "older"), repo_type="dataset", revision="v1")
    main = hub.add_repo("acme/calib", dataset(tmp_path / "main", "newer"), repo_type="dataset")
    access = {"hugging_face": {"endpoint": hub.endpoint}}

    pinned = Calibration(uri="hf://acme/calib", revision="v1", samples=4, max_sequence_length=16, **access)
    assert calibration_data.check_source(pinned, {}) == v1  # what preflight records
    loaded = calibration_data.load_rows(pinned, tmp_path / "work-v1", {}, chat=False)
    assert loaded.revision == v1 != main
    assert all(row["text"].startswith("older") for row in loaded.rows)

    latest = calibration_data.load_rows(Calibration(uri="hf://acme/calib", **access), tmp_path / "work-main", {}, chat=False)
    assert latest.revision == main and all(row["text"].startswith("newer") for row in latest.rows)

    with pytest.raises(CalibrationNotFound, match="revision 'v9'"):
        calibration_data.check_source(Calibration(uri="hf://acme/calib", revision="v9", **access), {})
