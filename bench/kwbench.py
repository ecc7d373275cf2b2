"""What the HTTP benchmark drivers under bench/ share: starting `keyward serve` on loopback,
calling its API, and running wrk against it.

Every driver reports its figures as medians of several runs and as ratios of a reference
measured in the same run, because absolute numbers on shared machines drift."""

import json
import os
import random
import re
import string
import subprocess
import time
import urllib.request
import zlib

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def keyward_secret(prefix="bench", environment="live"):
    """A secret in Keyward's format that nobody issued: 24 random base62 characters and a
    base62 CRC32, so that it passes every check but existence."""
    body = f"{prefix}_{environment}_" + "".join(random.choices(BASE62, k=24))
    checksum, digits = zlib.crc32(body.encode()), []
    for _ in range(6):
        checksum, digit = divmod(checksum, 62)
        digits.append(BASE62[digit])
    return body + "".join(reversed(digits))


def metric(base, name):
    """One of a node's Prometheus metrics, or None."""
    with urllib.request.urlopen(base + "/metrics") as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def start_server(binary, data_dir, env=None, name="a"):
    """Starts a node with a fresh environment (no KEYWARD_* from the caller's shell); returns
    the process, its base URL and the live root key it printed on its first start."""
    process = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        stdout=subprocess.PIPE,
        stderr=None if os.environ.get("KWBENCH_STDERR") else subprocess.DEVNULL,
        text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")},
             "KEYWARD_LOG": "warn", "KEYWARD_NODE_ID": name, **(env or {})},
    )
    live_key = base = None
    for line in process.stdout:
        line = line.strip()
        if line.startswith("live: "):
            live_key = line.removeprefix("live: ")
        if line.startswith("Keyward listening on "):
            base = line.removeprefix("Keyward listening on ")
            break
    return process, base, live_key


def stop(process):
    process.terminate()
    process.wait()


def call(base, key, method, path, body=None):
    """One API call with a root key; returns the JSON answer."""
    request = urllib.request.Request(
        base + path, method=method, data=json.dumps(body or {}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def wait_ready(base, redis=False):
    for _ in range(200):
        try:
            with urllib.request.urlopen(base + "/readyz") as response:
                body = json.load(response)
                if not redis or body.get("redis") == "up":
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{base} never became ready")


def post_script(directory, name, root, body):
    """A wrk script that POSTs the same JSON body with the root key."""
    path = os.path.join(directory, f"{name}.lua")
    with open(path, "w") as out:
        out.write(f"""
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer {root}"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {json.dumps(json.dumps(body))}
""")
    return path


def wrk(url, seconds, script=None, connections=32):
    """Runs wrk once; returns (requests per second, p99 in ms). Any non-2xx answer stops the
    benchmark: a figure measured on refusals would be meaningless."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        command += ["-s", script]
    output = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(output)


def parse_wrk(output):
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"{errors.group(1)} non-2xx answers\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(\w+)", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale
