"""Drives bench/soak.sh (issue 9): a soak and fault run of a three-node cluster on PostgreSQL
and Redis, with mixed traffic, while one node restarts and the database and Redis are each
blocked for 20 s.

Every node reaches PostgreSQL and Redis through a TCP relay of this script's, which is how a
block is made: the relay drops its connections and holds new ones without forwarding, as a
partition does, then lets them through again. At the end it prints:
- RSS growth after warm-up and the open-descriptor counts of the nodes that ran throughout;
- acceptances of a revoked key (a verification that started after the revoke call returned);
- credits spent beyond each metered key's balance;
- 5xx answers outside the fault windows, and inside them anything but a 503 envelope.
"""

import http.client
import json
import os
import random
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

from kwbench import start_server

BINARY = sys.argv[1]
DURATION = int(sys.argv[2])
DATABASE_URL = os.environ.get("KEYWARD_SOAK_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KEYWARD_SOAK_REDIS_URL", "redis://127.0.0.1:6379")
WARM_UP = 60
BLOCK_SECONDS = 20
# After a fault ends, the time a node may take to notice and recover (leases, backoff).
RECOVERY_GRACE = 10
METERED_KEYS = 5
CREDITS_EACH = 40_000


class Relay:
    """A TCP relay to `target` that can be blocked: its connections dropped, new ones held."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.blocked = threading.Event()
        self.connections = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        while self.blocked.is_set():  # held, as behind a partition
            time.sleep(0.1)
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        pair = (client, upstream)
        with self.lock:
            self.connections.append(pair)
        try:
            while not self.blocked.is_set():
                readable, _, _ = select.select(pair, [], [], 0.2)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        raise OSError("closed")
                    (upstream if source is client else client).sendall(data)
        except OSError:
            pass
        finally:
            for side in pair:
                side.close()
            with self.lock:
                if pair in self.connections:
                    self.connections.remove(pair)

    def block(self):
        self.blocked.set()

    def unblock(self):
        self.blocked.clear()


class Log:
    """Every answer the traffic got, with when it started and which node answered."""

    def __init__(self):
        self.lock = threading.Lock()
        self.answers = []  # (started, finished, node, kind, status, code)
        self.faults = []  # (start, end, what)
        self.violations = []

    def answer(self, *entry):
        with self.lock:
            self.answers.append(entry)

    def violation(self, text):
        with self.lock:
            self.violations.append(text)
            print(f"VIOLATION: {text}", file=sys.stderr)


class Cluster:
    def __init__(self, directory, database_url, redis_url):
        self.directory = directory
        self.env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "KEYWARD_MASTER_KEY": "c29hay1tYXN0ZXIta2V5LTMyLWJ5dGVzLWxvbmchISE=",
            "KEYWARD_REDIS_KEY_PREFIX": f"soak{int(time.time())}",
        }
        self.nodes = [None, None, None]
        self.root = None
        for index in range(3):
            self.start(index)

    def start(self, index):
        data = os.path.join(self.directory, f"node{index}")
        os.makedirs(data, exist_ok=True)
        process, base, root = start_server(BINARY, data, self.env, name=f"soak{index}")
        self.root = self.root or root
        parsed = urllib.parse.urlparse(base)
        self.nodes[index] = {"process": process, "host": parsed.hostname, "port": parsed.port}

    def restart(self, index):
        node = self.nodes[index]
        node["process"].send_signal(signal.SIGTERM)
        node["process"].wait(timeout=30)
        self.start(index)

    def call(self, index, method, path, body=None, key=None, timeout=10):
        node = self.nodes[index]
        connection = http.client.HTTPConnection(node["host"], node["port"], timeout=timeout)
        try:
            payload = None if method == "GET" else json.dumps(body or {})
            headers = {"Authorization": f"Bearer {key or self.root}"}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
            try:
                parsed = json.loads(data) if data else None
            except ValueError:
                parsed = None
            return response.status, parsed
        finally:
            connection.close()

    def stop(self):
        for node in self.nodes:
            node["process"].send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node["process"].wait(timeout=30)
            except subprocess.TimeoutExpired:
                node["process"].kill()


def sample_process(pid):
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    import tempfile

    admin = urllib.parse.urlparse(DATABASE_URL)
    name = f"keyward_soak_{int(time.time())}"
    subprocess.run(["psql", DATABASE_URL, "-q", "-c", f'CREATE DATABASE "{name}"'], check=True)
    redis = urllib.parse.urlparse(REDIS_URL)
    database_relay = Relay(admin.hostname, admin.port or 5432)
    redis_relay = Relay(redis.hostname, redis.port or 6379)
    relayed_database = admin._replace(
        netloc=f"{admin.username or 'postgres'}@127.0.0.1:{database_relay.port}",
        path=f"/{name}").geturl()
    relayed_redis = f"redis://127.0.0.1:{redis_relay.port}"
    log = Log()
    stop = threading.Event()
    with tempfile.TemporaryDirectory() as directory:
        cluster = Cluster(directory, relayed_database, relayed_redis)
        try:
            run(cluster, log, stop, database_relay, redis_relay)
        finally:
            stop.set()
            cluster.stop()
            subprocess.run(["psql", DATABASE_URL, "-q", "-c",
                            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], check=False)


def run(cluster, log, stop, database_relay, redis_relay):
    cluster.call(0, "POST", "/api/v1/apps", {"name": "Soak", "slug": "soak", "permissions": ["read"]})
    steady = [cluster.call(0, "POST", "/api/v1/apps/soak/keys", {"name": f"steady{n}"})[1]["secret"]
              for n in range(20)]
    metered = [cluster.call(0, "POST", "/api/v1/apps/soak/keys", {
        "name": f"metered{n}", "credits": {"remaining": CREDITS_EACH}})[1] for n in range(METERED_KEYS)]
    revoked = {}  # secret -> monotonic time its revoke call returned
    revoked_lock = threading.Lock()
    spent = {key["secret"]: 0 for key in metered}
    spent_lock = threading.Lock()
    started_at = time.monotonic()

    def in_fault(moment):
        return any(start - 1 <= moment <= end + RECOVERY_GRACE for start, end, _ in log.faults)

    def verify(secret, kind):
        index = random.randrange(3)
        began = time.monotonic()
        try:
            status, body = cluster.call(index, "POST", "/api/v1/keys/verify", {"key": secret})
        except OSError:
            log.answer(began, time.monotonic(), index, kind, None, "connection")
            return None
        code = (body or {}).get("code") or ((body or {}).get("error") or {}).get("code")
        log.answer(began, time.monotonic(), index, kind, status, code)
        if status == 200 and body.get("valid"):
            with revoked_lock:
                ended = revoked.get(secret)
            if ended is not None and began > ended:
                log.violation(f"revoked key accepted by node {index}, {began - ended:.3f} s after its revoke returned")
        if status >= 500 and not (status == 503 and body and "error" in body):
            log.violation(f"node {index} answered {status} without a 503 envelope: {body}")
        return body if status == 200 else None

    def steady_traffic():
        while not stop.is_set():
            verify(random.choice(steady), "verify")

    def metered_traffic():
        while not stop.is_set():
            secret = random.choice(list(spent))
            body = verify(secret, "metered")
            if body and body.get("valid"):
                with spent_lock:
                    spent[secret] += 1

    def lifecycle():
        while not stop.is_set():
            index = random.randrange(3)
            try:
                status, key = cluster.call(index, "POST", "/api/v1/apps/soak/keys", {"name": "cycle"})
                log.answer(time.monotonic(), time.monotonic(), index, "create", status, None)
                if status != 201:
                    time.sleep(0.5)
                    continue
                verify(key["secret"], "verify")
                status, rotated = cluster.call(random.randrange(3), "POST",
                                               f"/api/v1/keys/{key['id']}/rotate", {})
                log.answer(time.monotonic(), time.monotonic(), index, "rotate", status, None)
                if status == 200:
                    # Rotation without grace: the old secret is as good as revoked.
                    with revoked_lock:
                        revoked[key["secret"]] = time.monotonic()
                    secret = rotated["secret"]
                else:
                    secret = key["secret"]
                verify(secret, "verify")
                status, _ = cluster.call(random.randrange(3), "POST",
                                         f"/api/v1/keys/{key['id']}/revoke", {})
                log.answer(time.monotonic(), time.monotonic(), index, "revoke", status, None)
                if status == 200:
                    with revoked_lock:
                        revoked[secret] = time.monotonic()
                        revoked.setdefault(key["secret"], time.monotonic())
                    for _ in range(3):
                        verify(secret, "after-revoke")
                # Deleted at the end of its cycle, so that the number of keys stays steady and
                # memory measures the server, not a growing key population.
                status, _ = cluster.call(random.randrange(3), "DELETE", f"/api/v1/keys/{key['id']}")
                log.answer(time.monotonic(), time.monotonic(), index, "delete", status, None)
                verify(secret, "after-revoke")
            except OSError:
                time.sleep(0.2)

    def demo_sessions():
        while not stop.is_set():
            try:
                status, session = cluster.call(random.randrange(3), "POST", "/api/v1/demo/session", {})
                log.answer(time.monotonic(), time.monotonic(), 0, "demo", status, None)
                if status == 201:
                    cluster.call(random.randrange(3), "DELETE", "/api/v1/demo/session",
                                 key=session["secret"])
            except OSError:
                pass
            stop.wait(15)

    def sockets():
        """Event-stream clients: connect, subscribe, read, and reconnect when dropped."""
        import base64 as b64
        while not stop.is_set():
            index = random.randrange(3)
            node = cluster.nodes[index]
            try:
                connection = socket.create_connection((node["host"], node["port"]), timeout=5)
                key = b64.b64encode(os.urandom(16)).decode()
                connection.sendall((
                    f"GET /ws?api-key={cluster.root} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n").encode())
                handshake = connection.recv(4096)
                if b" 101 " not in handshake.split(b"\r\n")[0]:
                    connection.close()
                    stop.wait(1)
                    continue
                message = json.dumps({"type": "subscribe", "channels": ["events", "alerts"]}).encode()
                mask = os.urandom(4)
                masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(message))
                connection.sendall(bytes([0x81, 0x80 | len(message)]) + mask + masked)
                deadline = time.monotonic() + random.uniform(20, 60)
                while time.monotonic() < deadline and not stop.is_set():
                    try:
                        if not connection.recv(65536):
                            break
                    except socket.timeout:
                        continue
                connection.close()
            except OSError:
                stop.wait(1)

    workers = ([steady_traffic] * 4 + [metered_traffic] * 3 + [lifecycle] * 2
               + [demo_sessions] + [sockets] * 5)
    threads = [threading.Thread(target=work, daemon=True) for work in workers]
    for thread in threads:
        thread.start()

    samples = []  # (seconds since start, node, rss KiB, descriptors)

    def sample_all():
        moment = time.monotonic() - started_at
        for index in (0, 1):  # node 2 restarts; these two run throughout
            rss, fds = sample_process(cluster.nodes[index]["process"].pid)
            samples.append((moment, index, rss, fds))

    schedule = [
        (DURATION * 0.25, "restart node 2", lambda: cluster.restart(2), None),
        (DURATION * 0.45, "PostgreSQL blocked", database_relay.block, database_relay.unblock),
        (DURATION * 0.65, "Redis blocked", redis_relay.block, redis_relay.unblock),
    ]
    while time.monotonic() - started_at < DURATION:
        elapsed = time.monotonic() - started_at
        if schedule and elapsed >= schedule[0][0]:
            _, what, begin, end = schedule.pop(0)
            fault_start = time.monotonic()
            print(f"[{elapsed:5.0f} s] {what}", file=sys.stderr)
            begin()
            if end:
                time.sleep(BLOCK_SECONDS)
                end()
            log.faults.append((fault_start, time.monotonic(), what))
        sample_all()
        time.sleep(5)
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    # Let the nodes write balances back, then read what storage says each metered key has.
    time.sleep(3)
    report(cluster, log, samples, metered, spent, in_fault, started_at)


def report(cluster, log, samples, metered, spent, in_fault, started_at):
    resource_failures = []
    print(f"\nSoak: {DURATION} s, three nodes on PostgreSQL and Redis; faults at "
          + ", ".join(f"{start - started_at:.0f}–{end - started_at:.0f} s ({what})"
                      for start, end, what in log.faults) + ".\n")
    print("| check | result | required |")
    print("|---|---|---|")
    for index in (0, 1):
        after = [(m, rss, fds) for m, node, rss, fds in samples if node == index and m >= WARM_UP]
        first = [rss for m, rss, _ in after if m < WARM_UP + 60]
        last = [rss for m, rss, _ in after if m >= DURATION - 60]
        growth = statistics.median(last) / statistics.median(first) - 1
        fds = [fds for _, _, fds in after]
        print(f"| node {index}: RSS after warm-up → last minute | {statistics.median(first) / 1024:.1f} → "
              f"{statistics.median(last) / 1024:.1f} MiB ({growth:+.1%}) | < 5% growth |")
        first_fds = [fds for m, _, fds in after if m < WARM_UP + 60]
        last_fds = [fds for m, _, fds in after if m >= DURATION - 60]
        print(f"| node {index}: open descriptors after warm-up → last minute (min–max) | "
              f"{min(first_fds)}–{max(first_fds)} → {min(last_fds)}–{max(last_fds)} | flat |")
        if growth >= 0.05:
            resource_failures.append(f"node {index} RSS grew {growth:.1%}")
        # Flat: the last minute's descriptors stay within what the first minute used, give or
        # take the few connections that come and go.
        if max(last_fds) > max(first_fds) + 8:
            resource_failures.append(f"node {index} descriptors grew")
    answers = log.answers
    total = len(answers)
    outside_5xx = [a for a in answers if a[4] and a[4] >= 500 and not in_fault(a[0])]
    inside = [a for a in answers if in_fault(a[0])]
    inside_5xx = [a for a in inside if a[4] and a[4] >= 500]
    unclean = [a for a in inside_5xx if a[4] != 503]
    refused_connections = [a for a in answers if a[4] is None]
    outside_refused = [a for a in refused_connections if not in_fault(a[0])]
    revoked_accepted = [v for v in log.violations if v.startswith("revoked key accepted")]
    print(f"| requests answered | {total:,} (of them during or just after a fault: {len(inside):,}) | |")
    print(f"| acceptances of a revoked key | {len(revoked_accepted)} | 0 |")
    overspent = []
    for key in metered:
        status, stored = cluster.call(0, "GET", f"/api/v1/keys/{key['id']}")
        remaining = (stored.get("credits") or {}).get("remaining") if status == 200 else None
        accepted = spent[key["secret"]]
        if accepted > CREDITS_EACH:
            overspent.append(accepted - CREDITS_EACH)
        print(f"| {key['id']}: accepted verifications / credits; left in storage | {accepted:,} / "
              f"{CREDITS_EACH:,}; {remaining} | ≤ credits |")
    print(f"| credits spent beyond a balance | {sum(overspent)} | 0 |")
    print(f"| 5xx outside fault windows | {len(outside_5xx)} | 0 |")
    print(f"| 5xx inside fault windows: 503 envelopes / other | {len(inside_5xx) - len(unclean)} / "
          f"{len(unclean)} | other: 0 |")
    print(f"| connections refused outside fault windows | {len(outside_refused)} | 0 |")
    print(f"| other violations | {len(log.violations) - len(revoked_accepted)} | 0 |")
    failed = (revoked_accepted or overspent or outside_5xx or unclean or outside_refused
              or len(log.violations) > len(revoked_accepted) or resource_failures)
    for failure in resource_failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if failed:
        for entry in (outside_5xx + unclean + outside_refused)[:10]:
            print(f"  e.g. {entry}", file=sys.stderr)
        raise SystemExit(1)


main()
