"""The customer portal (issue 23), measured: the time to render the portal's key list for a
customer with 1,000 keys, and the time to complete a session exchange (the backend's
`POST /api/v1/portal/sessions`, then the browser's `GET /portal/enter/{code}` up to its
redirect), p50/p99 over sequential requests on kept-alive connections. References measured
in the same run: the API call the page is built on (`GET /api/v1/me/keys?limit=100`, made
by the in-process page with the session's grant, here as the root key's
`GET /api/v1/apps/{app}/keys?owner_user_id=…&limit=100`) and `GET /healthz`.

Usage: portal.py BINARY [REQUESTS] [ADMIN_URL]   (ADMIN_URL: PostgreSQL instead of SQLite)
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from kwbench import call, start_server, stop, wait_ready

BINARY = sys.argv[1]
REQUESTS = int(sys.argv[2]) if len(sys.argv) > 2 else 500
ADMIN_URL = sys.argv[3] if len(sys.argv) > 3 else None
KEYS = 1000


def percentiles(samples):
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return pick(0.5) * 1000, pick(0.99) * 1000


def timed(connection, method, path, headers=None, body=None):
    started = time.perf_counter()
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    payload = response.read()
    return time.perf_counter() - started, response, payload


def main():
    directory = tempfile.mkdtemp(prefix="kw-portal-")
    env = {}
    database = None
    if ADMIN_URL:
        name = f"kw_portal_{os.getpid()}_{int(time.time())}"
        subprocess.run(["psql", "-q", ADMIN_URL, "-c", f"CREATE DATABASE {name}"], check=True)
        database = name
        env["DATABASE_URL"] = urllib.parse.urlunsplit(
            urllib.parse.urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    process, base, root = start_server(BINARY, os.path.join(directory, "a"), env)
    try:
        wait_ready(base)
        call(base, root, "POST", "/api/v1/apps",
             {"name": "Reports", "slug": "reports", "permissions": ["read", "write"]})
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: call(base, root, "POST", "/api/v1/apps/reports/keys",
                                         {"name": f"key {n}", "owner_user_id": "usr_1"}),
                          range(KEYS)))
        host = urllib.parse.urlsplit(base).netloc
        connection = http.client.HTTPConnection(host)
        auth = {"Authorization": f"Bearer {root}", "Content-Type": "application/json"}
        session_body = json.dumps({"owner_user_id": "usr_1", "app": "reports"})

        # Session exchange: the backend's request for a link, then the browser opening it.
        asks, opens, exchanges = [], [], []
        cookie = None
        for _ in range(REQUESTS):
            asked, response, payload = timed(connection, "POST", "/api/v1/portal/sessions",
                                             auth, session_body)
            assert response.status == 201, payload
            path = urllib.parse.urlsplit(json.loads(payload)["url"]).path
            opened, response, _ = timed(connection, "GET", path)
            assert response.status == 303, response.status
            cookie = response.getheader("Set-Cookie").split(";")[0]
            asks.append(asked)
            opens.append(opened)
            exchanges.append(asked + opened)

        def series(method, path, headers=None, expect=200):
            samples = []
            for _ in range(REQUESTS):
                took, response, payload = timed(connection, method, path, headers)
                assert response.status == expect, (response.status, payload[:200])
                samples.append(took)
            return samples

        page = series("GET", "/portal", {"Cookie": cookie})
        api_list = series("GET", "/api/v1/apps/reports/keys?owner_user_id=usr_1&limit=100",
                          {"Authorization": f"Bearer {root}"})
        healthz = series("GET", "/healthz")
        rows = [
            ("session exchange (link asked for + opened)", exchanges),
            ("  POST /api/v1/portal/sessions", asks),
            ("  GET /portal/enter/{code} (to its 303)", opens),
            (f"GET /portal, {KEYS} keys (first 100 listed)", page),
            ("reference: GET /api/v1/apps/reports/keys?…&limit=100", api_list),
            ("reference: GET /healthz", healthz),
        ]
        backend = "PostgreSQL" if ADMIN_URL else "SQLite"
        print(f"{backend}, {REQUESTS} sequential requests each, one kept-alive connection")
        for label, samples in rows:
            p50, p99 = percentiles(samples)
            print(f"{label:58s} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
        page50, _ = percentiles(page)
        list50, _ = percentiles(api_list)
        print(f"page / its API list, p50: {page50 / list50:.2f}x")
    finally:
        stop(process)
        if database:
            subprocess.run(["psql", "-q", ADMIN_URL, "-c", f"DROP DATABASE {database}"])


if __name__ == "__main__":
    main()
