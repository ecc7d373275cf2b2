"""Drives bench/http_verify.sh: starts `keyward serve`, seeds keys, runs wrk, prints a table.

Every figure is the median of several runs; the verify figure is reported as a ratio of the
healthz figure measured in the same run, because absolute numbers on shared machines drift.
"""

import concurrent.futures
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import kwbench
from kwbench import call

BINARY, SECONDS, RUNS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
CONNECTIONS = 32
MANY_KEYS = 100_000


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wrk(base, path, script=None):
    return kwbench.wrk(base + path, SECONDS, script, CONNECTIONS)


def lua_script(directory, key, secrets):
    """A wrk script that POSTs verify calls, cycling through `secrets`."""
    path = os.path.join(directory, f"verify-{len(secrets)}.lua")
    keys_path = os.path.join(directory, f"keys-{len(secrets)}.txt")
    with open(keys_path, "w") as keys:
        keys.write("\n".join(secrets))
    with open(path, "w") as script:
        script.write(f"""
local keys = {{}}
for line in io.lines("{keys_path}") do keys[#keys + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i % #keys + 1
  return wrk.format(nil, nil, nil, '{{"key":"' .. keys[i] .. '"}}')
end
""")
    return path


def main():
    with tempfile.TemporaryDirectory() as directory:
        # Extra server settings for a comparison run, e.g. '{"KEYWARD_USAGE_ANALYTICS": "false"}'.
        extra = json.loads(os.environ.get("KEYWARD_BENCH_SERVER_ENV", "{}"))
        process, base, root = kwbench.start_server(BINARY, directory, extra)
        try:
            time.sleep(1)
            idle_rss = rss_mb(process.pid)
            call(base, root, "POST", "/api/v1/apps", {"name": "Bench", "slug": "bench"})
            secret = call(base, root, "POST", "/api/v1/apps/bench/keys", {"name": "hot"})["secret"]
            one_key = lua_script(directory, root, [secret])

            healthz, verify = [], []
            for _ in range(RUNS):
                healthz.append(wrk(base, "/healthz"))
                verify.append(wrk(base, "/api/v1/keys/verify", one_key))
            healthz_rps = statistics.median(r for r, _ in healthz)
            verify_rps = statistics.median(r for r, _ in verify)
            print(f"| GET /healthz | {healthz_rps:,.0f} req/s | p99 {statistics.median(p for _, p in healthz):.2f} ms | reference |")
            print(f"| POST /api/v1/keys/verify (cached key) | {verify_rps:,.0f} req/s | p99 {statistics.median(p for _, p in verify):.2f} ms | {verify_rps / healthz_rps:.0%} of healthz |")

            started = time.time()
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                secrets = list(pool.map(
                    lambda n: call(base, root, "POST", "/api/v1/apps/bench/keys", {"name": f"k{n}"})["secret"],
                    range(MANY_KEYS),
                ))
            created = time.time() - started
            many = lua_script(directory, root, secrets)
            rps, p99 = wrk(base, "/api/v1/keys/verify", many)
            with urllib.request.urlopen(base + "/metrics") as response:
                metrics = response.read().decode()
            cached = int(re.search(r"keyward_verify_cache_entries (\d+)", metrics).group(1))
            print(f"| POST /api/v1/keys/verify cycling over {MANY_KEYS:,} keys | {rps:,.0f} req/s | p99 {p99:.2f} ms | {cached:,} secrets cached |")
            print(f"| RSS idle | {idle_rss:.1f} MB | | target < 50 MB |")
            print(f"| RSS with {MANY_KEYS:,} keys cached | {rss_mb(process.pid):.1f} MB | | target < 200 MB |")
            print(f"| key creation over HTTP (16 clients) | {MANY_KEYS / created:,.0f} keys/s | | |")
        finally:
            process.terminate()
            process.wait()


main()
