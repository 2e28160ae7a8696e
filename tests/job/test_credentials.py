"""Credentials as Secrets made from files hold them, and S3 settings botocore refuses: one rule, clear refusals."""

from __future__ import annotations

import pytest

from kompress_api.v1alpha1 import S3Access
from kompress_job.io import credentials
from kompress_job.errors import AccessDenied, InvalidSpec
from kompress_job.io.s3client import credentials_from_env, make_client

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("raw", ["AKIAEXAMPLE\n", "  AKIAEXAMPLE \r\n", "\ufeffAKIAEXAMPLE\n", "\tAKIAEXAMPLE"])
def test_surrounding_whitespace_is_not_part_of_a_credential(raw):
    assert credentials.read({"HF_TOKEN": raw}, "HF_TOKEN") == "AKIAEXAMPLE"


def test_a_blank_credential_is_unset():
    assert credentials.read({"HF_TOKEN": " \n"}, "HF_TOKEN") is None
    assert credentials.read({}, "HF_TOKEN") is None


@pytest.mark.parametrize(("raw", "what"), [("AKIA\nSECRET", "U+000A"), ("AKIA\x07X1", "U+0007"), ("AKIA\u200bX1", "U+200B"), ("AKIAé123", "non-ASCII")])
def test_a_credential_that_cannot_be_sent_is_refused_naming_the_variable_not_the_value(raw, what):
    with pytest.raises(AccessDenied) as err:
        credentials.read({"KOMPRESS_OUTPUT_S3_AWS_ACCESS_KEY_ID": raw}, "KOMPRESS_OUTPUT_S3_AWS_ACCESS_KEY_ID", where="the output's s3.credentialsSecret")
    assert "$KOMPRESS_OUTPUT_S3_AWS_ACCESS_KEY_ID" in err.value.message and what in err.value.message
    assert "AKIA" not in err.value.message and not err.value.exit.retriable


def test_a_secret_access_key_only_signs_so_it_may_hold_any_printable_text():
    assert credentials.read({"K": "sécret/+=% key\n"}, "K", in_header=False) == "sécret/+=% key"
    with pytest.raises(AccessDenied):
        credentials.read({"K": "sécret\nkey"}, "K", in_header=False)


def test_the_per_location_variables_and_the_standard_ones_follow_the_same_rule():
    env = {"KOMPRESS_OUTPUT_S3_AWS_ACCESS_KEY_ID": "key-id\n", "KOMPRESS_OUTPUT_S3_AWS_SECRET_ACCESS_KEY": "secret/+=\n", "KOMPRESS_OUTPUT_S3_AWS_SESSION_TOKEN": " \n"}
    creds = credentials_from_env("output", env)
    assert (creds.access_key_id, creds.secret_access_key, creds.session_token) == ("key-id", "secret/+=", None)
    laptop = credentials_from_env("output", {"AWS_ACCESS_KEY_ID": "laptop-key \n", "AWS_SECRET_ACCESS_KEY": "laptop-secret\n"}, prefix="")
    assert (laptop.access_key_id, laptop.secret_access_key) == ("laptop-key", "laptop-secret")
    client = make_client(S3Access(endpoint="http://127.0.0.1:9"), {"AWS_ACCESS_KEY_ID": "laptop-key\n", "AWS_SECRET_ACCESS_KEY": "s\n"}, "output")
    assert client._request_signer._credentials.access_key == "laptop-key"


@pytest.mark.parametrize("access", [S3Access(endpoint="http://bad host:9000"), S3Access(region="us east 1")])
def test_s3_settings_botocore_refuses_are_invalid_spec_not_a_retried_error(access):
    with pytest.raises(InvalidSpec) as err:
        make_client(access, {}, "output")
    assert "s3.endpoint" in err.value.message and "s3.region" in err.value.message and not err.value.exit.retriable
