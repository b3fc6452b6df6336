"""Webhook signatures (likeness_client.webhooks, which the trainer signs with): the Standard Webhooks reference
library accepts them, and `verify` refuses a changed body, another secret and an old delivery."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
import standardwebhooks

from likeness_client.webhooks import InvalidSignature, signed_headers, verify

BODY = json.dumps({"type": "training_job.state_changed", "job_id": "job-1", "state": "JOB_STATE_SUCCEEDED"}).encode()
WHSEC = "whsec_" + base64.b64encode(b"a 24-byte signing secret").decode()


@pytest.mark.parametrize("secret", [WHSEC, "a-plain-secret-of-32-characters!"])
def test_our_verifier_accepts_our_signature(secret: str) -> None:
    assert verify(secret, signed_headers(secret, "msg_1", BODY), BODY)["job_id"] == "job-1"


def test_the_reference_library_accepts_our_signature() -> None:
    headers = signed_headers(WHSEC, "msg_2", BODY)
    assert standardwebhooks.Webhook(WHSEC).verify(BODY, headers)["state"] == "JOB_STATE_SUCCEEDED"


def test_our_verifier_accepts_the_reference_library_signature() -> None:
    webhook = standardwebhooks.Webhook(WHSEC)
    moment = dt.datetime.now(tz=dt.timezone.utc)
    headers = {
        "webhook-id": "msg_3",
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": webhook.sign("msg_3", moment, BODY.decode()),
    }
    assert verify(WHSEC, headers, BODY)["job_id"] == "job-1"


def test_tampering_another_secret_and_replays_are_refused() -> None:
    headers = signed_headers(WHSEC, "msg_4", BODY)
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify(WHSEC, headers, BODY.replace(b"SUCCEEDED", b"FAILED"))
    with pytest.raises(InvalidSignature, match="no signature matches"):
        verify("whsec_" + base64.b64encode(b"another secret").decode(), headers, BODY)
    old = signed_headers(WHSEC, "msg_5", BODY, timestamp=1_000_000_000)
    with pytest.raises(InvalidSignature, match="from now"):
        verify(WHSEC, old, BODY)
    with pytest.raises(InvalidSignature, match="headers"):
        verify(WHSEC, {}, BODY)
