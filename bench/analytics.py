"""Drives bench/analytics.sh (issue 8's targets): verify throughput with usage recording on
against off (two servers, alternating, same run), the usage query over 30 days of per-minute
counts for one key, and the first page of a key list of 100,000 keys, through the API and
through the dashboard."""

import http.client
import json
import re
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from kwbench import call, post_script, start_server, stop, wait_ready, wrk

BINARY, SECONDS, RUNS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MINUTE = 60_000
DAYS = 30
LISTED_KEYS = 100_000


def timed_gets(base, root, path, count=30):
    """Median and p95 of `count` GETs, in ms."""
    durations = []
    for _ in range(count):
        request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {root}"})
        started = time.perf_counter()
        with urllib.request.urlopen(request) as response:
            raw = response.read()
        # Until the whole answer has arrived; the client's own JSON parsing is not the server's.
        durations.append((time.perf_counter() - started) * 1000)
        body = json.loads(raw)
    durations.sort()
    return statistics.median(durations), durations[int(len(durations) * 0.95) - 1], body


def throughput(directory):
    on_dir, off_dir = (os.path.join(directory, name) for name in ("on", "off"))
    os.makedirs(on_dir)
    os.makedirs(off_dir)
    servers = {
        "on": start_server(BINARY, on_dir),
        "off": start_server(BINARY, off_dir, {"KEYWARD_USAGE_ANALYTICS": "false"}),
    }
    try:
        scripts = {}
        for name, (_, base, root) in servers.items():
            wait_ready(base)
            call(base, root, "POST", "/api/v1/apps", {"name": "Bench", "slug": "bench"})
            secret = call(base, root, "POST", "/api/v1/apps/bench/keys", {"name": "hot"})["secret"]
            scripts[name] = post_script(directory, f"verify-{name}", root, {"key": secret})
            wrk(base + "/api/v1/keys/verify", SECONDS, scripts[name])  # warm up
        runs = {"on": [], "off": []}
        for _ in range(RUNS):
            for name in ("off", "on"):
                base = servers[name][1]
                runs[name].append(wrk(base + "/api/v1/keys/verify", SECONDS, scripts[name]))
        on_base, on_root = servers["on"][1], servers["on"][2]
        time.sleep(11)  # the last interval's counts (written every 10 s)
        report = call(on_base, on_root, "GET", "/api/v1/usage?granularity=day")
        with urllib.request.urlopen(on_base + "/metrics") as response:
            metrics = response.read().decode()
        dropped = next(line.split()[1] for line in metrics.splitlines()
                       if line.startswith("keyward_usage_records_dropped_total"))
    finally:
        for process, _, _ in servers.values():
            stop(process)
    off = statistics.median(r for r, _ in runs["off"])
    on = statistics.median(r for r, _ in runs["on"])
    print(f"| verify, usage recording off (reference) | {off:,.0f} req/s | p99 {statistics.median(p for _, p in runs['off']):.2f} ms | |")
    print(f"| verify, usage recording on | {on:,.0f} req/s | p99 {statistics.median(p for _, p in runs['on']):.2f} ms | {on / off:.0%} of off (target ≥ 90%) |")
    print(f"| verifications counted by the recording server | {report['total']:,} | | `keyward_usage_records_dropped_total` {dropped} |")


def usage_query(directory):
    """30 days of per-minute counts for one key (and a neighbour key), written into the
    database while the server is stopped, then queried through the API."""
    data = os.path.join(directory, "query")
    os.makedirs(data)
    process, base, root = start_server(BINARY, data)
    wait_ready(base)
    call(base, root, "POST", "/api/v1/apps", {"name": "Bench", "slug": "bench"})
    key = call(base, root, "POST", "/api/v1/apps/bench/keys", {"name": "busy"})["id"]
    workspace = call(base, root, "GET", "/api/v1/environment")["workspace_id"]
    stop(process)
    now = int(time.time() * 1000) // MINUTE * MINUTE
    start = now - DAYS * 86_400_000
    rows = []
    for key_id in (key, "key_neighbour"):
        for minute in range(start, now, MINUTE):
            for granularity, width in (("minute", MINUTE), ("hour", 3_600_000), ("day", 86_400_000)):
                rows.append((workspace, "live", granularity, minute - minute % width, key_id, "app", "", "VALID", 1))
    with sqlite3.connect(os.path.join(data, "keyward.db")) as db:
        db.executemany(
            "INSERT INTO usage_counts (workspace_id, environment, granularity, bucket, key_id, "
            "app_id, organization_id, outcome, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (workspace_id, environment, granularity, key_id, app_id, organization_id, "
            "outcome, bucket) DO UPDATE SET count = count + excluded.count", rows)
    # A restart prints no root key: the first start's is still valid.
    process, base, _ = start_server(BINARY, data)
    try:
        wait_ready(base)
        frm = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1000))
        to = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000))
        path = f"/api/v1/usage?key_id={key}&granularity=minute&from={frm}&to={to}"
        p50, p95, body = timed_gets(base, root, path)
        assert body["total"] == DAYS * 1440, body["total"]
        print(f"| usage query, 30 days of per-minute counts for one key ({len(body['data']):,} buckets) | p50 {p50:.1f} ms · p95 {p95:.1f} ms | | target < 100 ms |")
    finally:
        stop(process)


def dashboard_cookie(base, root):
    """Signs in to the dashboard as a browser would; returns the session cookie."""
    host = base.removeprefix("http://")
    connection = http.client.HTTPConnection(host)
    connection.request("GET", "/dashboard/sign-in")
    response = connection.getresponse()
    form = response.read().decode()
    sign_in_cookie = response.getheader("Set-Cookie").split(";")[0]
    token = re.search(r'name="csrf" value="([0-9a-f]{32})"', form).group(1)
    body = urllib.parse.urlencode({"csrf": token, "root_key": root})
    connection.request("POST", "/dashboard/sign-in", body=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": sign_in_cookie})
    response = connection.getresponse()
    response.read()
    assert response.status == 303, response.status
    session = [value for name, value in response.getheaders()
               if name.lower() == "set-cookie" and value.startswith("kw_session=")]
    return session[0].split(";")[0]


def timed_pages(base, cookie, path, count=30):
    """Median and p95 of `count` dashboard page loads (the HTML only), in ms."""
    host = base.removeprefix("http://")
    durations = []
    page = ""
    for _ in range(count):
        connection = http.client.HTTPConnection(host)
        started = time.perf_counter()
        connection.request("GET", path, headers={"Cookie": cookie})
        response = connection.getresponse()
        page = response.read().decode()
        durations.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, (response.status, page[:200])
        connection.close()
    durations.sort()
    return statistics.median(durations), durations[int(len(durations) * 0.95) - 1], page


def key_list(directory):
    data = os.path.join(directory, "list")
    os.makedirs(data)
    process, base, root = start_server(BINARY, data)
    try:
        wait_ready(base)
        call(base, root, "POST", "/api/v1/apps", {"name": "Big", "slug": "big"})
        for batch in range(LISTED_KEYS // 1000):
            keys = [{"hash": f"{batch * 1000 + n + 1:064x}", "start": "big", "name": f"k{batch * 1000 + n}"}
                    for n in range(1000)]
            call(base, root, "POST", "/api/v1/apps/big/keys/import", {"keys": keys})
        p50, p95, body = timed_gets(base, root, "/api/v1/apps/big/keys?limit=20")
        assert len(body["data"]) == 20
        print(f"| first page of a key list, {LISTED_KEYS:,} keys in the app (API) | p50 {p50:.1f} ms · p95 {p95:.1f} ms | | target < 100 ms |")
        cookie = dashboard_cookie(base, root)
        p50, p95, page = timed_pages(base, cookie, "/dashboard/apps/big")
        assert page.count('href="/dashboard/keys/') == 20, "a page of 20 keys"
        print(f"| the same first page in the dashboard (HTML) | p50 {p50:.1f} ms · p95 {p95:.1f} ms | | target < 100 ms |")
        p50, p95, page = timed_pages(base, cookie, "/dashboard/apps/big?search=k99999")
        assert page.count('href="/dashboard/keys/') == 1, "one key named k99999"
        print(f"| dashboard search by name, 1 match among {LISTED_KEYS:,} | p50 {p50:.1f} ms · p95 {p95:.1f} ms | | |")
        p50, p95, page = timed_pages(base, cookie, "/dashboard/apps/big?search=nothing-matches")
        print(f"| dashboard search by name, no match among {LISTED_KEYS:,} (reads every key) | p50 {p50:.1f} ms · p95 {p95:.1f} ms | | |")
    finally:
        stop(process)


with tempfile.TemporaryDirectory() as directory:
    if os.environ.get("SKIP_THROUGHPUT") != "1":
        throughput(directory)
    usage_query(directory)
    key_list(directory)
