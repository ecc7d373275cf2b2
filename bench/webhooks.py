"""Drives bench/webhooks.sh (issue 22): webhook delivery and leak reports, measured.

1. Key creation with webhooks on (5 endpoints taking every event, answered by nginx
   `return 200` so that the receiver costs the shared cores as little as it can) against off
   (the same endpoints disabled), alternated in one run: the ratios of throughput and of the
   server's CPU per key are what recording and delivering events costs.
2. EVENTS key creations delivered to 5 endpoints: every delivery counted at the receiver by
   its webhook-id (lost, repeated), and the time from the event's commit (its `timestamp`)
   to receipt, p50/p99 per endpoint.
3. The same with one of the 5 endpoints hanging: the other 4's p99 against step 2's.
4. A GitHub secret-scanning report of 500 live keys, signed with a test key (openssl) whose
   public half the receiver serves: the time to answer, and when the last key is refused on
   every node (three nodes on PostgreSQL when ADMIN_URL is given, else one on SQLite).

Usage: webhooks.py BINARY EVENTS SECONDS [ADMIN_URL]   (steady runs at RATE events/s: 250)
PHASES (default "1234") picks the steps to run; step 3 needs step 2.
"""

import asyncio
import base64
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.client import HTTPConnection

from kwbench import call, metric, post_script, start_server, stop, wait_ready, wrk

BINARY = sys.argv[1]
EVENTS, SECONDS = int(sys.argv[2]), int(sys.argv[3])
ADMIN_URL = sys.argv[4] if len(sys.argv) > 4 else None
ENDPOINTS = 5
RATE = int(os.environ.get("RATE", "250"))
PHASES = os.environ.get("PHASES", "1234")


# --- the receiver: asyncio HTTP/1.1 with keep-alive, in a process of its own -------------

def receiver_main(port_out, github_keys):
    records = []  # (path, webhook-id, event timestamp ms, receipt ms)

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                received = time.time() * 1000
                if path == "/hang":
                    await asyncio.sleep(3600)
                    return
                if path == "/_stats":
                    answer = json.dumps(records).encode()
                elif path == "/_reset":
                    records.clear()
                    answer = b"{}"
                elif path == "/github-keys":
                    answer = github_keys.encode()
                else:
                    stamp = json.loads(body)["timestamp"]
                    event_ms = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000
                    records.append((path, headers.get("webhook-id"), event_ms, received))
                    answer = b"ok"
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(answer)).encode() + b"\r\n\r\n" + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port_out.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(serve())


def receiver_get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as response:
        return json.load(response)


def receiver_post(port, path):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST", data=b"{}")
    with urllib.request.urlopen(request) as response:
        return json.load(response)


# --- the server under test -----------------------------------------------------------------

def fresh_database():
    name = f"kw_webhooks_{os.getpid()}_{int(time.time())}"
    subprocess.run(["psql", "-q", ADMIN_URL, "-c", f"CREATE DATABASE {name}"], check=True)
    parts = urllib.parse.urlsplit(ADMIN_URL)
    return name, urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def node_env(database_url):
    env = {"KEYWARD_ALLOW_PRIVATE_URLS": "true"}
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def create_keys(base, root, app, count, threads=16, rate=None):
    """Creates `count` keys with `threads` keep-alive clients, as fast as they go or at `rate`
    per second; returns their secrets."""
    host = urllib.parse.urlsplit(base).netloc
    body = json.dumps({"name": "bench"})
    per_thread = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
    started = time.time()
    issued = iter(range(count))
    issued_lock = threading.Lock()

    def pace():
        if rate:
            with issued_lock:
                number = next(issued)
            delay = started + number / rate - time.time()
            if delay > 0:
                time.sleep(delay)

    def work(n):
        connection, secrets = HTTPConnection(host), []
        for _ in range(n):
            pace()
            connection.request("POST", f"/api/v1/apps/{app}/keys", body,
                               {"Authorization": f"Bearer {root}",
                                "Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read())
            if response.status != 201:
                raise SystemExit(f"key creation failed: {answer}")
            secrets.append(answer["secret"])
        return secrets

    with ThreadPoolExecutor(threads) as pool:
        return [secret for batch in pool.map(work, per_thread) for secret in batch]


def wait_delivered(port, expected, timeout=600):
    deadline = time.time() + timeout
    last, stable_since = -1, time.time()
    while time.time() < deadline:
        records = receiver_get(port, "/_stats")
        ids = {(r[0], r[1]) for r in records}
        if len(ids) >= expected:
            return records
        if len(ids) != last:
            last, stable_since = len(ids), time.time()
        elif time.time() - stable_since > 60:
            break
        time.sleep(0.5)
    return receiver_get(port, "/_stats")


def percentile(values, fraction):
    values = sorted(values)
    return values[min(len(values) - 1, int(fraction * len(values)))]


def delivery_report(records, paths, expected_per_path):
    per_path = {}
    for path in paths:
        mine = [r for r in records if r[0] == path]
        ids = {r[1] for r in mine}
        latencies = [r[3] - r[2] for r in mine]
        per_path[path] = {
            "delivered": len(ids),
            "lost": expected_per_path - len(ids),
            "repeats": len(mine) - len(ids),
            "p50_ms": round(percentile(latencies, 0.5), 1) if latencies else None,
            "p99_ms": round(percentile(latencies, 0.99), 1) if latencies else None,
        }
    return per_path


def nginx_receiver(directory):
    """nginx answering 200 to every POST, on a free port; returns (process, port)."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.chmod(directory, 0o755)
    config = os.path.join(directory, "nginx-receiver.conf")
    with open(config, "w") as out:
        out.write(f"""daemon off; worker_processes 1; error_log /dev/null; pid {directory}/nginx.pid;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 100000;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok"; }} }} }}
""")
    process = subprocess.Popen(["nginx", "-c", config, "-p", directory])
    time.sleep(0.5)
    return process, port


def cpu_seconds(pid):
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def openssl_key(directory):
    private = os.path.join(directory, "github.pem")
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", private], check=True)
    public = subprocess.run(["openssl", "ec", "-in", private, "-pubout"], check=True,
                            capture_output=True, text=True).stdout
    return private, public


def openssl_sign(private, body):
    signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", private], input=body,
                               check=True, capture_output=True).stdout
    return base64.b64encode(signature).decode()


def main():
    directory = tempfile.mkdtemp(prefix="kw-webhooks-")
    private, public = openssl_key(directory)
    github_keys = json.dumps({"public_keys": [
        {"key_identifier": "bench", "key": public, "is_current": True}]})
    ports = multiprocessing.Queue()
    receiver = multiprocessing.Process(target=receiver_main, args=(ports, github_keys),
                                       daemon=True)
    receiver.start()
    port = ports.get()
    hook = lambda path: f"http://127.0.0.1:{port}{path}"

    database = fresh_database() if ADMIN_URL else None
    database_url = database[1] if database else None
    env = node_env(database_url)
    env["KEYWARD_GITHUB_SCANNING_KEYS_URL"] = hook("/github-keys")
    data_dir = os.path.join(directory, "a")
    paths = [f"/e{i}" for i in range(ENDPOINTS)]

    # 1. What recording events costs key creation: a node that queues deliveries but does
    # not deliver them (KEYWARD_WEBHOOK_DELIVERY=false; another node would), with 5
    # endpoints on against the same endpoints off, alternated.
    process, base, root = start_server(BINARY, data_dir,
                                       {**env, "KEYWARD_WEBHOOK_DELIVERY": "false"})
    wait_ready(base)
    call(base, root, "POST", "/api/v1/apps", {"name": "Bench", "slug": "bench"})
    nginx, nginx_port = nginx_receiver(directory)
    endpoints = []

    def set_enabled(on):
        for endpoint in endpoints:
            call(base, root, "PATCH", f"/api/v1/webhook-endpoints/{endpoint}", {"enabled": on})

    def delete_endpoint(endpoint):
        urllib.request.urlopen(urllib.request.Request(
            f"{base}/api/v1/webhook-endpoints/{endpoint}", method="DELETE", data=b"{}",
            headers={"Authorization": f"Bearer {root}", "Content-Type": "application/json"}))

    def key_creation_runs(rounds=3):
        script = post_script(directory, "create", root, {"name": "wrk"})
        url = f"{base}/api/v1/apps/bench/keys"
        runs = {"off": [], "on": []}
        for _ in range(rounds):
            for state in ("off", "on"):
                set_enabled(state == "on")
                before = cpu_seconds(process.pid)
                rps = wrk(url, SECONDS, script, connections=16)[0]
                # Deliveries of this run's keys are part of its cost: wait until the
                # worker has been idle for a second (none when this node does not deliver).
                idle_since = time.time()
                while time.time() - idle_since < 1.0:
                    if metric(base, "keyward_webhook_deliveries_in_flight"):
                        idle_since = time.time()
                    time.sleep(0.05)
                runs[state].append((rps, (cpu_seconds(process.pid) - before) / (rps * SECONDS)))
        return runs

    def summary(runs):
        off = statistics.median(r[0] for r in runs["off"])
        on = statistics.median(r[0] for r in runs["on"])
        off_cpu = statistics.median(r[1] for r in runs["off"]) * 1e6
        on_cpu = statistics.median(r[1] for r in runs["on"]) * 1e6
        return (f"req/s off {[round(r[0]) for r in runs['off']]}, on "
                f"{[round(r[0]) for r in runs['on']]}: median ratio on/off {on / off:.2f}; "
                f"server CPU per key off {off_cpu:.0f} us, on {on_cpu:.0f} us "
                f"({on_cpu / off_cpu:.2f}x)")

    def delivered_by_nginx():
        return [call(base, root, "POST", "/api/v1/webhook-endpoints",
                     {"url": f"http://127.0.0.1:{nginx_port}{path}", "events": ["*"]})["id"]
                for path in paths]

    if "1" in PHASES:
        endpoints = delivered_by_nginx()
        print(f"key creation, events recorded for 5 endpoints (delivered elsewhere): "
              f"{summary(key_creation_runs())}")
        for endpoint in endpoints:
            delete_endpoint(endpoint)
    stop(process)

    # 1b. The same node delivering too, to nginx on the same two cores (deliveries waited
    # for in each run): the whole cost of webhooks on one machine.
    process, base, _ = start_server(BINARY, data_dir, env)
    wait_ready(base)
    if "1" in PHASES:
        endpoints = delivered_by_nginx()
        print(f"key creation, delivered to 5 endpoints on the same machine: "
              f"{summary(key_creation_runs(rounds=1))}")
        for endpoint in endpoints:
            delete_endpoint(endpoint)
    nginx.terminate()
    endpoints = [call(base, root, "POST", "/api/v1/webhook-endpoints",
                      {"url": hook(path), "events": ["*"]})["id"] for path in paths]
    time.sleep(2)

    if "2" in PHASES:
        # 2. EVENTS events to 5 healthy endpoints, at a steady RATE (the latency of the pipeline,
        # not of a backlog), then as fast as keys can be made (the drain time of a burst).
        receiver_post(port, "/_reset")
        started = time.time()
        create_keys(base, root, "bench", EVENTS, rate=RATE)
        created = time.time() - started
        records = wait_delivered(port, EVENTS * ENDPOINTS)
        drained = time.time() - started
        healthy = delivery_report(records, paths, EVENTS)
        print(f"{EVENTS} events at {RATE}/s to {ENDPOINTS} endpoints: created in {created:.1f} s, "
              f"all delivered after {drained:.1f} s")
        for path, figures in healthy.items():
            print(f"  {path}: {figures}")
        receiver_post(port, "/_reset")
        started = time.time()
        create_keys(base, root, "bench", EVENTS)
        created = time.time() - started
        records = wait_delivered(port, EVENTS * ENDPOINTS)
        burst = delivery_report(records, paths, EVENTS)
        print(f"{EVENTS} events as fast as they are made: created in {created:.1f} s, all "
              f"{len({(r[0], r[1]) for r in records})} delivered after {time.time() - started:.1f} s "
              f"(lost {sum(f['lost'] for f in burst.values())}, repeats "
              f"{sum(f['repeats'] for f in burst.values())})")

    if "3" in PHASES:
        # 3. The steady run again with one endpoint hanging.
        call(base, root, "PATCH", f"/api/v1/webhook-endpoints/{endpoints[0]}", {"url": hook("/hang")})
        receiver_post(port, "/_reset")
        started = time.time()
        create_keys(base, root, "bench", EVENTS, rate=RATE)
        records = wait_delivered(port, EVENTS * (ENDPOINTS - 1))
        drained = time.time() - started
        hanging = delivery_report(records, paths[1:], EVENTS)
        print(f"the same with {paths[0]} hanging: the other 4 had everything after {drained:.1f} s")
        for path, figures in hanging.items():
            before = healthy[path]["p99_ms"]
            print(f"  {path}: {figures}; p99 {figures['p99_ms'] / before:.2f}x the healthy run's")
        delete_endpoint(endpoints[0])

    # 4. A GitHub report of 500 live keys.
    others = []
    if "4" in PHASES:
        if database_url:
            for name in ("b", "c"):
                node = start_server(BINARY, os.path.join(directory, "a"), env, name=name)
                wait_ready(node[1])
                others.append(node)
        nodes = [base] + [node[1] for node in others]
        secrets = create_keys(base, root, "bench", 500)
        time.sleep(1)
        body = json.dumps([{"token": s, "type": "keyward_api_key",
                            "url": "https://github.com/o/r/blob/main/.env", "source": "content"}
                           for s in secrets]).encode()
        signature = openssl_sign(private, body)
        request = urllib.request.Request(
            base + "/api/v1/secret-scanning/github", method="POST", data=body,
            headers={"Content-Type": "application/json", "Github-Public-Key-Identifier": "bench",
                     "Github-Public-Key-Signature": signature})
        started = time.time()
        with urllib.request.urlopen(request) as response:
            labels = json.load(response)
        answered = time.time() - started
        refused = []
        for node in nodes:
            code = call(node, root, "POST", "/api/v1/keys/verify", {"key": secrets[-1]})["code"]
            refused.append(code)
        all_refused = time.time() - started
        positives = sum(1 for label in labels if label["label"] == "true_positive")
        print(f"GitHub report of 500 keys: answered in {answer_ms(answered)}, {positives} true "
              f"positives; the last key refused on all {len(nodes)} node(s) ({set(refused)}) "
              f"{answer_ms(all_refused)} after the report was sent")

    for node in others:
        stop(node[0])
    stop(process)
    receiver.terminate()
    if database:
        subprocess.run(["psql", "-q", ADMIN_URL, "-c", f"DROP DATABASE {database[0]}"])


def answer_ms(seconds):
    return f"{seconds * 1000:.0f} ms"


if __name__ == "__main__":
    main()
