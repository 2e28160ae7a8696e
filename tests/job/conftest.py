"""Fixtures for the worker's tests: a local S3 and Hub over real HTTP, a tokenizer, model and checkpoint folders."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from kompress_testing.hub import LocalHub
from kompress_testing.jobs import train_tokenizer, write_model
from kompress_testing.s3 import MotoS3


@pytest.fixture(scope="session")
def s3():
    with MotoS3() as server:
        yield server


@pytest.fixture
def bucket(s3) -> str:
    return s3.create_bucket(f"kompress-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def hub():
    with LocalHub() as server:
        yield server


@pytest.fixture(scope="session")
def tokenizer_files(tmp_path_factory) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture
def model_folder(tmp_path, tokenizer_files) -> Path:
    return write_model(
        tmp_path / "source-model",
        tokenizer_files,
        extra={"pytorch_model.bin": b"\0" * 1000, "README.md": b"# a model\n", "original/consolidated.00.pth": b"\0" * 100},
    )


