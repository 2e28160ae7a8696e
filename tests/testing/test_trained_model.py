"""The committed trained test model is what its script and data make: change the script (or the corpus
package) without running `python -m kompress_testing.trained_model`, and this fails, as the CRD drift test
does for the API model. The weights are tied to the provenance's claims by re-measuring them."""

from __future__ import annotations

import json

import pytest

from kompress_testing import trained_model

pytestmark = pytest.mark.unit

REGENERATE = "run `python -m kompress_testing.trained_model` (about 2.5 minutes) and commit the folder"


@pytest.fixture(scope="module")
def provenance() -> dict:
    return json.loads((trained_model.folder() / trained_model.PROVENANCE).read_text())


def test_the_committed_model_was_made_by_the_current_script(provenance):
    assert provenance["scriptSha256"] == trained_model.script_sha256(), f"trained_model.py changed since the model was trained: {REGENERATE}"


def test_the_committed_model_was_trained_on_the_current_text(provenance):
    train, held = trained_model.split_conversations()
    data = provenance["data"]
    assert data["trainingTextSha256"] == trained_model.text_sha256(train), f"the training text changed (chatterbot-corpus {data['version']} then): {REGENERATE}"
    assert data["heldOutTextSha256"] == trained_model.text_sha256(held)
    assert (data["trainingConversations"], data["heldOutConversations"]) == (len(train), len(held))
    # held out means never trained on, not even a repeated copy
    assert not {json.dumps(t) for t in held} & {json.dumps(t) for t in train}
    rows = [json.loads(line) for line in (trained_model.folder() / trained_model.HELDOUT).read_text().splitlines()]
    assert rows == [{"messages": trained_model.as_messages(t)} for t in held]


def test_every_committed_file_is_the_one_the_provenance_lists(provenance):
    folder = trained_model.folder()
    on_disk = {p.name for p in folder.iterdir() if p.is_file()} - {trained_model.PROVENANCE, "README.md"}
    assert set(provenance["files"]) == on_disk
    for name, digest in provenance["files"].items():
        assert trained_model.file_sha256(folder / name) == digest, f"{name} was changed by hand: {REGENERATE}"


def test_the_weights_have_the_held_out_perplexity_the_provenance_claims(provenance):
    import torch

    from kompress_job.model import modelio

    torch.set_num_threads(1)
    folder = trained_model.folder()
    # the worker's loader (experts as per-expert Linear layers, as llm-compressor sees them): once it has run in
    # a process, transformers' plain from_pretrained no longer fuses this checkpoint's per-expert weights
    model = modelio.load_causal_lm(folder, dtype="float32")
    tokenizer = modelio.load_tokenizer(folder)
    _, held = trained_model.split_conversations()
    measured = trained_model._perplexity(model, trained_model._token_stream(tokenizer, held))
    claimed = provenance["heldOutPerplexity"]
    assert measured == pytest.approx(claimed["trained"], rel=1e-3)
    assert measured < claimed["untrained"] / 10
