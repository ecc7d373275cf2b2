"""Drives bench/cluster.sh: the cluster figures of docs/benchmarks.md.

1. Import throughput: `keyward import` of SCALE_KEYS keys into PostgreSQL (and of 100k into
   SQLite, for comparison).
2. Scale: verification latency (p50, p99) for cache misses and hits with SCALE_KEYS keys in
   PostgreSQL, against the same with 10,000 keys, measured in the same run.
3. Warm-cache verify throughput of a PostgreSQL-backed node against an SQLite-backed one.
4. Revocation propagation: the duration of REVOCATIONS revoke calls on a three-node cluster,
   against the same calls on a single SQLite node.

Every node is the release binary on loopback; each PostgreSQL database is made for the run
and dropped after it.
"""

import concurrent.futures
import http.client
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

from kwbench import keyward_secret

BINARY = sys.argv[1]
REVOCATIONS = int(sys.argv[2])
SCALE_KEYS = int(sys.argv[3])
WRK_SECONDS = int(sys.argv[4])
PARTS = os.environ.get("KEYWARD_BENCH_PARTS", "scale,revoke").split(",")
ADMIN_URL = os.environ.get("KEYWARD_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
SMALL_KEYS = 10_000
SAMPLE = 6_000
ROUNDS = 3


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_") and k != "DATABASE_URL"}
    env.update({"KEYWARD_LOG": "warn", **extra})
    return env


class Node:
    def __init__(self, data_dir, name, database_url=None):
        env = clean_env(KEYWARD_NODE_ID=name)
        if database_url:
            env["DATABASE_URL"] = database_url
        os.makedirs(data_dir, exist_ok=True)
        self.log = os.path.join(data_dir, "stderr.log")
        self.process = subprocess.Popen(
            [BINARY, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
            stdout=subprocess.PIPE, stderr=open(self.log, "w"), text=True, env=env,
        )
        self.root = None
        for line in self.process.stdout:
            line = line.strip()
            if line.startswith("live: "):
                self.root = line.removeprefix("live: ")
            if line.startswith("Keyward listening on "):
                self.base = line.removeprefix("Keyward listening on ")
                break
        address = urllib.parse.urlparse(self.base)
        self.host, self.port = address.hostname, address.port
        self.wait_until_caching()

    def connection(self):
        return http.client.HTTPConnection(self.host, self.port)

    def call(self, method, path, body=None, root=None, connection=None):
        own = connection is None
        connection = connection or self.connection()
        connection.request(method, path, body=json.dumps(body or {}), headers={
            "Authorization": f"Bearer {root or self.root}", "Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read()
        if own:
            connection.close()
        if response.status >= 300:
            with open(self.log) as log:
                tail = log.read()[-3000:]
            raise SystemExit(f"{method} {path}: {response.status} {data[:300]!r}\n{tail}")
        return json.loads(data) if data else None

    def wait_until_caching(self):
        for _ in range(200):
            connection = self.connection()
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
            connection.close()
            if "keyward_verify_cache_trusted 1" in text:
                return
            time.sleep(0.05)
        raise SystemExit("the node never trusted its cache")

    def stop(self):
        self.process.terminate()
        self.process.wait()


def psql(sql):
    subprocess.run(["psql", ADMIN_URL, "-q", "-c", sql], check=True, capture_output=True)


def fresh_url(name):
    return urllib.parse.urlparse(ADMIN_URL)._replace(path=f"/{name}").geturl()


def fresh_database(name):
    psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{name}"')
    return fresh_url(name)


def write_keys(path, count):
    """A JSONL export of `count` Keyward-format keys; returns a random sample of them."""
    sample_at = set(random.sample(range(count), min(SAMPLE, count)))
    sample = []
    with open(path, "w") as file:
        for index in range(count):
            secret = keyward_secret()
            file.write(json.dumps({"secret": secret, "name": f"k{index}", "owner_user_id": f"u{index % 1000}"}) + "\n")
            if index in sample_at:
                sample.append(secret)
    random.shuffle(sample)
    return sample


def import_file(node, app, path):
    started = time.perf_counter()
    subprocess.run(
        [BINARY, "import", "--app", app, path, "--json", "--batch-size", "1000", "--restart"],
        check=True, capture_output=True, text=True,
        env=clean_env(KEYWARD_URL=node.base, KEYWARD_API_KEY=node.root),
    )
    return time.perf_counter() - started


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def verify_latencies(node, keys):
    """Milliseconds per verification, one at a time over one kept-alive connection."""
    connection, timings = node.connection(), []
    for key in keys:
        started = time.perf_counter()
        answer = node.call("POST", "/api/v1/keys/verify", {"key": key}, connection=connection)
        timings.append((time.perf_counter() - started) * 1000)
        if answer["code"] != "VALID":
            raise SystemExit(f"unexpected {answer['code']}")
    connection.close()
    return timings


def scale_figures(nodes, samples):
    """Per node: median over ROUNDS of (p50, p99) for misses (first verification of a key on
    the node) and hits (the same keys again). Nodes take turns, so both see the same noise."""
    figures = {node: {"miss": [], "hit": []} for node in nodes}
    for round_index in range(ROUNDS):
        for node in nodes:
            keys = samples[node][round_index::ROUNDS]
            for kind in ("miss", "hit"):
                timings = verify_latencies(node, keys)
                figures[node][kind].append((statistics.median(timings), percentile(timings, 0.99)))
    return {
        node: {kind: (statistics.median(p for p, _ in runs), statistics.median(p for _, p in runs))
               for kind, runs in kinds.items()}
        for node, kinds in figures.items()
    }


def wrk(url, script):
    output = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{WRK_SECONDS}s", "-s", script, url],
        capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise SystemExit(output)
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def verify_script(directory, node, secret):
    path = os.path.join(directory, f"verify-{node.port}.lua")
    with open(path, "w") as script:
        script.write(f"""
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer {node.root}"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{{"key":"{secret}"}}'
""")
    return path


def revoke_durations(node, key_ids):
    connection, timings = node.connection(), []
    for key_id in key_ids:
        started = time.perf_counter()
        node.call("POST", f"/api/v1/keys/{key_id}/revoke", connection=connection)
        timings.append((time.perf_counter() - started) * 1000)
    connection.close()
    return timings


def issue_warm_keys(creator, verifiers, count):
    """Creates `count` keys and verifies each on every node, so every cache holds them."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda n: creator.call("POST", "/api/v1/apps/bench/keys", {"name": f"r{n}"}), range(count)))
    for node in verifiers:
        verify_latencies(node, [key["secret"] for key in keys])
    return keys


def row(*cells):
    print("| " + " | ".join(cells) + " |", flush=True)


def scale_part(directory, databases, nodes, sqlite):
    """Parts 1 to 3 of the module documentation."""
    print(f"generating {SCALE_KEYS:,} keys…", file=sys.stderr)
    large_file = os.path.join(directory, "large.jsonl")
    large_sample = write_keys(large_file, SCALE_KEYS)
    small_file = os.path.join(directory, "small.jsonl")
    small_sample = write_keys(small_file, SMALL_KEYS)
    sqlite_file = os.path.join(directory, "sqlite.jsonl")
    write_keys(sqlite_file, 100_000)

    # 1 and 2: import and scale.
    small = Node(os.path.join(directory, "small"), "small", fresh_database(databases[0]))
    large = Node(os.path.join(directory, "large"), "large", fresh_database(databases[1]))
    nodes += [small, large]
    for node in (small, large):
        node.call("POST", "/api/v1/apps", {"name": "Bench", "slug": "bench"})
    import_file(small, "bench", small_file)
    large_seconds = import_file(large, "bench", large_file)
    sqlite_seconds = import_file(sqlite, "bench", sqlite_file)
    row(f"`keyward import` of {SCALE_KEYS:,} keys into PostgreSQL",
        f"{SCALE_KEYS / large_seconds:,.0f} rows/s ({large_seconds:.1f} s)",
        f"100,000 into SQLite: {100_000 / sqlite_seconds:,.0f} rows/s",
        f"target ≥ 20,000 rows/s")

    # As after any bulk load: let PostgreSQL refresh its statistics first, so that
    # autovacuum does not run in the middle of the measurement.
    for name in databases[:2]:
        subprocess.run(["psql", fresh_url(name), "-q", "-c", "VACUUM ANALYZE"], check=True)
    figures = scale_figures([small, large], {small: small_sample, large: large_sample})
    small_figures, large_figures = figures[small], figures[large]
    for kind in ("miss", "hit"):
        (small_p50, small_p99), (large_p50, large_p99) = small_figures[kind], large_figures[kind]
        row(f"verify, cache {kind}, {SCALE_KEYS:,} keys in PostgreSQL",
            f"p50 {large_p50:.3f} ms · p99 {large_p99:.3f} ms",
            f"{SMALL_KEYS:,} keys: p50 {small_p50:.3f} ms · p99 {small_p99:.3f} ms",
            f"p50 {large_p50 / small_p50:.2f}× · p99 {large_p99 / small_p99:.2f}× (target ≤ 1.5×)")

    # 3: warm-cache throughput, PostgreSQL against SQLite.
    hot = large_sample[0]
    sqlite_hot = sqlite.call("POST", "/api/v1/apps/bench/keys", {"name": "hot"})["secret"]
    postgres_runs, sqlite_runs = [], []
    for _ in range(3):
        postgres_runs.append(wrk(large.base + "/api/v1/keys/verify", verify_script(directory, large, hot)))
        sqlite_runs.append(wrk(sqlite.base + "/api/v1/keys/verify", verify_script(directory, sqlite, sqlite_hot)))
    postgres_rps, sqlite_rps = statistics.median(postgres_runs), statistics.median(sqlite_runs)
    row("verify throughput, warm cache, PostgreSQL-backed node",
        f"{postgres_rps:,.0f} req/s", f"SQLite-backed node: {sqlite_rps:,.0f} req/s",
        f"{postgres_rps / sqlite_rps:.0%} (target ≥ 90%)")
    for node in (small, large):
        node.stop()
    nodes.remove(small)
    nodes.remove(large)
    for name in databases[:2]:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main():
    run = f"keyward_bench_{os.getpid()}"
    databases = [f"{run}_small", f"{run}_large", f"{run}_cluster"]
    nodes = []
    with tempfile.TemporaryDirectory() as directory:
        try:
            row("Case", "Figure", "Reference (same run)", "Ratio / target")
            row("---", "---", "---", "---")
            sqlite = Node(os.path.join(directory, "sqlite"), "sqlite")
            nodes.append(sqlite)
            sqlite.call("POST", "/api/v1/apps", {"name": "Bench", "slug": "bench"})
            if "scale" in PARTS:
                scale_part(directory, databases, nodes, sqlite)
            if "revoke" not in PARTS:
                return
            # 4: revocation propagation.
            cluster_url = fresh_database(databases[2])
            cluster = [Node(os.path.join(directory, f"c{n}"), name, cluster_url) for n, name in enumerate("abc")]
            nodes += cluster
            for node in cluster[1:]:
                node.root = cluster[0].root
            cluster[0].call("POST", "/api/v1/apps", {"name": "Bench", "slug": "bench"})
            keys = issue_warm_keys(cluster[0], cluster, REVOCATIONS)
            cluster_times = revoke_durations(cluster[0], [key["id"] for key in keys])
            for node in cluster[1:]:
                for key in keys[:50]:
                    code = node.call("POST", "/api/v1/keys/verify", {"key": key["secret"]})["code"]
                    if code != "KEY_REVOKED":
                        raise SystemExit(f"node answered {code} for a revoked key")
            single = issue_warm_keys(sqlite, [sqlite], REVOCATIONS)
            single_times = revoke_durations(sqlite, [key["id"] for key in single])
            connection = cluster[0].connection()
            connection.request("GET", "/metrics")
            metrics = connection.getresponse().read().decode()
            lapses = re.search(r"keyward_cluster_propagation_lapses_total (\d+)", metrics)
            row(f"revoke call, 3 nodes on PostgreSQL, {REVOCATIONS:,} calls",
                f"p50 {statistics.median(cluster_times):.2f} ms · p99 {percentile(cluster_times, 0.99):.2f} ms · "
                f"max {max(cluster_times):.2f} ms · {lapses.group(1) if lapses else '?'} lease waits",
                f"1 SQLite node: p50 {statistics.median(single_times):.2f} ms · p99 {percentile(single_times, 0.99):.2f} ms",
                "target p99 < 50 ms")
        finally:
            for node in nodes:
                node.stop()
            for name in databases:
                psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


main()
