"""The raw-HTTP signer used by the error tests must sign exactly like the real
clients, or a 401 from Socle would prove nothing. Checked offline against the
worked example of NOTES.md and the captured requests of real clients."""

import json
from pathlib import Path

import pytest

from socle_lib import sign

REFERENCE = Path(__file__).resolve().parents[2] / "reference" / "osc-api"
CAPTURED = REFERENCE / "captured-requests.jsonl"


def test_signer_matches_notes_worked_example():
    auth = sign(algorithm="OSC4-HMAC-SHA256", key_prefix="OSC4", service="api",
                term="osc4_request", access_key="ABCDEFGHIJ0123456789", secret_key="X" * 40,
                region="eu-west-2", date_iso="20250101T120000Z", path="/api/v1/ReadVms",
                headers=[("content-type", "application/json; charset=utf-8"),
                         ("host", "api.eu-west-2.outscale.com"),
                         ("x-osc-date", "20250101T120000Z")],
                body=b'{"Filters": {"VmIds": ["i-12345678"]}}')
    assert auth.endswith("Signature=62b67af625712a23094d230b0c046167f177467521c39c9184fc33b1cb8e80dc")
    assert auth.startswith("OSC4-HMAC-SHA256 Credential=ABCDEFGHIJ0123456789/20250101/eu-west-2/api/osc4_request, "
                           "SignedHeaders=content-type;host;x-osc-date, ")


def _captured():
    if not CAPTURED.exists():
        pytest.fail(f"reference vectors not found at {CAPTURED}")
    return [json.loads(line) for line in CAPTURED.read_text().splitlines() if line.strip()]


def test_signer_matches_captured_real_clients():
    requests_ = _captured()
    assert len(requests_) == 4
    for req in requests_:
        headers = {k.lower(): v for k, v in req["headers"].items()}
        auth = headers["authorization"]
        alg, rest = auth.split(" ", 1)
        fields = dict(part.strip().split("=", 1) for part in rest.split(","))
        ak, date, region, service, term = fields["Credential"].split("/")
        names = fields["SignedHeaders"].split(";")
        date_iso = headers.get("x-osc-date") or headers.get("x-amz-date")
        host_values = {"host": headers["host"]}
        if alg.startswith("OSC4") and "content-type" in names:
            host_values["host"] = headers["host"].split(":")[0]  # osc-sdk-python drops the port
        signed = [(n, host_values.get(n, headers.get(n))) for n in names]
        mine = sign(algorithm=alg, key_prefix=alg.split("-")[0], service=service, term=term,
                    access_key=ak, secret_key="SK0123456789abcdefghijklmnopqrstuvwxyzAB",
                    region=region, date_iso=date_iso, path=req["path"], headers=signed,
                    body=req["body"].encode())
        assert mine == auth, f"signature mismatch for {req['headers'].get('User-Agent') or req['headers'].get('user-agent')}"
