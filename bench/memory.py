"""Drives bench/memory.sh (issue 19, item 1): memory and speed of one node over a large
key population in PostgreSQL, with the verification cache bounded.

Keys are written straight into a fresh database (one API-made key copied N times, each with
an imported-format secret `memkey-<n>` whose SHA-256 is in `secrets`), so that millions of
keys take minutes, not hours. Then the node verifies, with wrk, random keys of a small
working set and of a large one; the working set's throughput is reported against the small
set's, measured in the same run, with the node's RSS after each and the cache's metrics.

Usage: memory.py BINARY ADMIN_URL KEYS WORKING_SET BUDGET_BYTES SECONDS
"""

import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse

from kwbench import call, metric, start_server, stop, wait_ready

BINARY, ADMIN_URL = sys.argv[1], sys.argv[2]
KEYS, WORKING_SET, BUDGET, SECONDS = (int(arg) for arg in sys.argv[3:7])
SMALL_SET = 10_000


def psql(url, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def rss_mb(pid, field="VmRSS"):
    """Resident memory now, or with `VmHWM` its peak so far."""
    with open(f"/proc/{pid}/status") as status:
        kb = int(re.search(field + r":\s+(\d+)", status.read()).group(1))
    return kb / 1024


def wrk(base, root, keys, seconds, directory, unknown=False):
    """(req/s, requests) verifying a random key of the first `keys` each request, or with
    `unknown`, a random key that does not exist (`memkey-u<n>`)."""
    name = "u" if unknown else ""
    script = os.path.join(directory, f"random-{name}{keys}.lua")
    with open(script, "w") as out:
        out.write(f"""wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer {root}"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(os.time())
request = function()
  return wrk.format(nil, nil, nil, '{{"key":"memkey-{name}' .. math.random(0, {keys - 1}) .. '"}}')
end
""")
    output = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds}s", "-s", script,
                             f"{base}/api/v1/keys/verify"], capture_output=True, text=True,
                            check=True).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)), requests


def main():
    name = f"keyward_memory_{os.getpid()}"
    psql(ADMIN_URL, f"CREATE DATABASE {name}")
    url = urllib.parse.urlparse(ADMIN_URL)._replace(path=f"/{name}").geturl()
    directory = tempfile.mkdtemp()
    env = {"DATABASE_URL": url, "KEYWARD_CACHE_MAX_BYTES": str(BUDGET)}
    # Extra server settings, e.g. KW_MEMORY_SERVER_ENV="KEYWARD_USAGE_ANALYTICS=false", to
    # see what a background writer costs.
    env.update(pair.split("=", 1) for pair in os.environ.get("KW_MEMORY_SERVER_ENV", "").split())
    try:
        process, base, root = start_server(BINARY, os.path.join(directory, "data"), env=env)
        wait_ready(base)
        call(base, root, "POST", "/api/v1/apps", {"name": "Memory", "slug": "memory",
                                                   "permissions": ["read"]})
        template = call(base, root, "POST", "/api/v1/apps/memory/keys",
                        {"name": "template", "permissions": ["read"],
                         "owner_user_id": "usr_template"})["id"]
        stop(process)
        started = time.time()
        psql(url, f"""
            INSERT INTO api_keys (id, workspace_id, environment, app_id, name, owner_user_id,
                organization_id, permissions, meta, start, expires_at, enabled, revoked_at,
                created_at, updated_at, last_used_at)
            SELECT 'key_mem' || n, workspace_id, environment, app_id, 'memory ' || n,
                'usr_' || n, organization_id, permissions, meta, 'memkey-' || n, NULL, TRUE,
                NULL, created_at, updated_at, NULL
            FROM api_keys CROSS JOIN generate_series(0, {KEYS - 1}) AS n
            WHERE id = '{template}';
            INSERT INTO secrets (hash, credential_id, expires_at)
            SELECT sha256(convert_to('memkey-' || n, 'UTF8')), 'key_mem' || n, NULL
            FROM generate_series(0, {KEYS - 1}) AS n;
            UPDATE installation SET foreign_secrets = TRUE;
            ANALYZE;""")
        print(f"(wrote {KEYS:,} keys in {time.time() - started:.0f} s)", file=sys.stderr)

        started = time.time()
        process, base, _ = start_server(BINARY, os.path.join(directory, "data"), env=env)
        wait_ready(base)
        pid = process.pid
        after_start = rss_mb(pid)
        # The filter of known credentials is built from storage in the background.
        while metric(base, "keyward_verify_filter_ready") != 1:
            time.sleep(0.2)
        filter_built = time.time() - started
        filter_bytes = metric(base, "keyward_verify_filter_bytes")
        filter_rss = rss_mb(pid)
        # The small set first: warm, then measured; then unknown keys (each a fresh random
        # one: only the filter's false positives read storage); then the large set, warmed
        # until every key has had its chance to be loaded, then measured.
        wrk(base, root, SMALL_SET, 5, directory)
        small, _ = wrk(base, root, SMALL_SET, SECONDS, directory)
        small_rss = rss_mb(pid)
        reads_before = metric(base, "keyward_verify_storage_reads_total")
        unknown, unknown_requests = wrk(base, root, 2**31 - 1, SECONDS, directory, unknown=True)
        unknown_reads = metric(base, "keyward_verify_storage_reads_total") - reads_before
        started = time.time()
        while time.time() - started < 600:
            wrk(base, root, WORKING_SET, 20, directory)
            loaded = metric(base, "keyward_verify_storage_reads_total") or 0
            if loaded >= WORKING_SET:
                break
        large, _ = wrk(base, root, WORKING_SET, SECONDS, directory)
        large_rss = rss_mb(pid)
        peak_rss = rss_mb(pid, "VmHWM")
        weighted = metric(base, "keyward_verify_cache_weighted_bytes")
        entries = metric(base, "keyward_verify_cache_entries")
        evictions = metric(base, "keyward_verify_cache_evictions_total")
        # Verifications the usage recorder could not count (its queue full, or too many sums
        # waiting for storage): a writer that falls behind sheds them rather than slow
        # verification, so a ratio is only fair when this stays at 0.
        unrecorded = metric(base, "keyward_usage_records_dropped_total") or 0
        folded = metric(base, "keyward_usage_key_counts_folded_total") or 0
        stop(process)
        print(f"\n{KEYS:,} keys in PostgreSQL, cache budget {BUDGET / 2**20:.0f} MiB, "
              f"{SECONDS} s per measurement, wrk -t1 -c32.\n")
        print("| | req/s | RSS after |")
        print("|---|---|---|")
        print(f"| started, nothing verified | | {after_start:.0f} MB |")
        print(f"| filter of known credentials built ({filter_built:.0f} s after start, "
              f"{filter_bytes / 2**20:.1f} MiB) | | {filter_rss:.0f} MB |")
        print(f"| random keys of {SMALL_SET:,} | {small:,.0f} | {small_rss:.0f} MB |")
        print(f"| random unknown keys (a fresh one each request) | {unknown:,.0f} | |")
        print(f"| random keys of {WORKING_SET:,} | {large:,.0f} | {large_rss:.0f} MB |")
        print(f"| peak of the whole run | | {peak_rss:.0f} MB |")
        print(f"\nverifications not counted in usage analytics: {unrecorded:,.0f}; counted "
              f"towards their app but not their key: {folded:,.0f}")
        print(f"\nworking set / small set: {large / small:.2f}×; unknown keys / small set: "
              f"{unknown / small:.2f}×, {unknown_reads:,.0f} storage reads in "
              f"{unknown_requests:,} requests ({unknown_reads / unknown_requests:.2%}: the "
              f"filter's false positives); cache: {entries:,.0f} entries, "
              f"{weighted / 2**20:.0f} MiB weighted, {evictions:,.0f} evictions")
    finally:
        psql(ADMIN_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


main()
