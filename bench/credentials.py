"""Drives bench/credentials.sh (issue 6): `POST /api/v1/verify-request` with a JWT public key
and an ES256 end-user JWT that the token cache already holds, against `POST
/api/v1/keys/verify` with a secret key, on the same server in the same run, alternating."""

import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from kwbench import call, post_script, start_server, stop, wait_ready, wrk

BINARY, SECONDS, RUNS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_signature_to_raw(der):
    """ECDSA signatures come from openssl as DER `SEQUENCE { r INTEGER, s INTEGER }`; a JWS
    wants r and s as 32 big-endian bytes each."""
    assert der[0] == 0x30
    at = 2 if der[1] < 0x80 else 3
    parts = []
    for _ in range(2):
        assert der[at] == 0x02
        length = der[at + 1]
        parts.append(int.from_bytes(der[at + 2:at + 2 + length], "big").to_bytes(32, "big"))
        at += 2 + length
    return b"".join(parts)


def es256_key_and_token(directory):
    """An ES256 key pair made by openssl: its public half (PEM) and a day-long token."""
    private = os.path.join(directory, "jwt.key")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", private], check=True)
    public = subprocess.run(["openssl", "ec", "-in", private, "-pubout"], check=True,
                            capture_output=True, text=True).stdout
    header = b64url(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
    claims = b64url(json.dumps({"sub": "usr_bench", "exp": int(time.time()) + 86400}).encode())
    signing_input = f"{header}.{claims}".encode()
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", private], input=signing_input,
                         check=True, capture_output=True).stdout
    return public, f"{header}.{claims}.{b64url(der_signature_to_raw(der))}"


def main():
    with tempfile.TemporaryDirectory() as directory:
        process, base, root = start_server(BINARY, directory)
        try:
            wait_ready(base)
            call(base, root, "POST", "/api/v1/apps", {"name": "Bench", "slug": "bench"})
            secret = call(base, root, "POST", "/api/v1/apps/bench/keys", {"name": "hot"})["secret"]
            public_pem, token = es256_key_and_token(directory)
            public_key = call(base, root, "POST", "/api/v1/public-keys", {
                "type": "jwt", "public_key": public_pem, "algorithms": ["ES256"]})["key"]
            gateway_request = {"method": "GET", "path": "/orders", "headers": {
                "X-API-Key": public_key, "Authorization": f"Bearer {token}"}}
            verdict = call(base, root, "POST", "/api/v1/verify-request", gateway_request)
            assert verdict["valid"] and verdict["subject"] == "usr_bench", verdict

            keys_verify = post_script(directory, "keys-verify", root, {"key": secret})
            verify_request = post_script(directory, "verify-request", root, gateway_request)
            wrk(base + "/api/v1/verify-request", SECONDS, verify_request)  # warm up
            secret_runs, jwt_runs = [], []
            for _ in range(RUNS):
                secret_runs.append(wrk(base + "/api/v1/keys/verify", SECONDS, keys_verify))
                jwt_runs.append(wrk(base + "/api/v1/verify-request", SECONDS, verify_request))
            secret_rps = statistics.median(r for r, _ in secret_runs)
            jwt_rps = statistics.median(r for r, _ in jwt_runs)
            secret_p99 = statistics.median(p for _, p in secret_runs)
            jwt_p99 = statistics.median(p for _, p in jwt_runs)
            print(f"| POST /api/v1/keys/verify, secret key | {secret_rps:,.0f} req/s | p99 {secret_p99:.2f} ms | reference |")
            print(f"| POST /api/v1/verify-request, pk_jwt + cached ES256 JWT | {jwt_rps:,.0f} req/s | p99 {jwt_p99:.2f} ms | {jwt_rps / secret_rps:.0%} of keys/verify (target ≥ 60%) |")
        finally:
            stop(process)


main()
