"""Drives bench/usage.sh. Every figure is a median of several runs, and each is reported as a
ratio of a reference measured in the same run, because absolute numbers on shared machines
drift."""

import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from kwbench import call, parse_wrk, post_script, start_server, wait_ready

BINARY, SECONDS, RUNS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
CONNECTIONS = 32
REDIS = os.environ.get("KEYWARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
DATABASE = os.environ.get("KEYWARD_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
HUGE = 1_000_000_000_000


def script(directory, root, secret, name):
    return post_script(directory, name, root, {"key": secret})


def wrk(bases, lua, connections=CONNECTIONS):
    """Runs one wrk per base at once; returns total req/s and the worst p99 (ms)."""
    processes = [subprocess.Popen(
        ["wrk", "-t1", f"-c{max(1, connections // len(bases))}", f"-d{SECONDS}s", "--latency",
         "-s", lua, base + "/api/v1/keys/verify"], stdout=subprocess.PIPE, text=True)
        for base in bases]
    total, worst = 0.0, 0.0
    for process in processes:
        rps, p99 = parse_wrk(process.communicate()[0])
        total += rps
        worst = max(worst, p99)
    return total, worst


def redis_command(*words):
    """Sends one command over RESP and returns its bulk-string reply (INFO's)."""
    host, port = REDIS.removeprefix("redis://").rstrip("/").split(":")
    with socket.create_connection((host, int(port))) as connection:
        payload = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
        connection.sendall(payload.encode())
        reader = connection.makefile("rb")
        length = int(reader.readline()[1:])
        return reader.read(length).decode(errors="replace")


def redis_calls():
    """Script calls (EVALSHA/EVAL) Redis has answered: a verification's round trips. Redis
    also counts the commands a script runs inside it, which are not round trips."""
    stats = redis_command("INFO", "commandstats")
    calls = 0
    for line in stats.splitlines():
        match = re.match(r"cmdstat_(\w+):calls=(\d+)", line)
        if match and match.group(1) in ("evalsha", "eval"):
            calls += int(match.group(2))
    return calls


def seed(base, root):
    call(base, root, "POST", "/api/v1/rate-limit-schemes", {"slug": "bench", "windows": [
        {"limit": HUGE, "period_seconds": 1}, {"limit": HUGE, "period_seconds": 3600}]})
    call(base, root, "POST", "/api/v1/apps", {"name": "Bench", "slug": "bench"})
    plain = call(base, root, "POST", "/api/v1/apps/bench/keys", {"name": "plain"})["secret"]
    metered = call(base, root, "POST", "/api/v1/apps/bench/keys", {
        "name": "metered", "rate_limit_scheme": "bench",
        "credits": {"remaining": HUGE * 1000}})["secret"]
    return plain, metered


def measure(bases, plain_lua, metered_lua):
    plain, metered = [], []
    for _ in range(RUNS):
        plain.append(wrk(bases, plain_lua))
        metered.append(wrk(bases, metered_lua))
    median = lambda runs, i: statistics.median(r[i] for r in runs)
    return (median(plain, 0), median(plain, 1)), (median(metered, 0), median(metered, 1))


def row(name, figures, reference=None):
    rps, p99 = figures
    ratio = f"{rps / reference:.0%} of plain verify" if reference else "reference"
    print(f"| {name} | {rps:,.0f} req/s | p99 {p99:.2f} ms | {ratio} |")


def main():
    with tempfile.TemporaryDirectory() as directory:
        # One node, in-process engine.
        process, base, root = start_server(BINARY, directory)
        try:
            wait_ready(base)
            plain, metered = seed(base, root)
            plain_lua = script(directory, root, plain, "plain")
            metered_lua = script(directory, root, metered, "metered")
            wrk([base], metered_lua)  # warm up
            p, m = measure([base], plain_lua, metered_lua)
            row("one node, plain verify", p)
            row("one node, rate limit + credits, in-process engine", m, p[0])
        finally:
            process.terminate()
            process.wait()

        # One node, Redis engine.
        prefix = f"kwbench{int(time.time())}"
        with tempfile.TemporaryDirectory() as data:
            process, base, root = start_server(BINARY, data, {"REDIS_URL": REDIS, "KEYWARD_REDIS_KEY_PREFIX": prefix})
            try:
                wait_ready(base, redis=True)
                plain, metered = seed(base, root)
                plain_lua = script(directory, root, plain, "plain1")
                metered_lua = script(directory, root, metered, "metered1")
                wrk([base], metered_lua)
                before = redis_calls()
                call(base, root, "POST", "/api/v1/keys/verify", {"key": metered})
                for _ in range(999):
                    call(base, root, "POST", "/api/v1/keys/verify", {"key": metered})
                # Health-check PINGs are left out; each verification's EVALSHA counts.
                per_verify = (redis_calls() - before) / 1000
                p, m = measure([base], plain_lua, metered_lua)
                row("one node + Redis, plain verify", p)
                row("one node + Redis, rate limit + credits", m, p[0])
                print(f"| Redis round trips (script calls) per metered verification | {per_verify:.2f} | | target ≤ 1 |")
            finally:
                process.terminate()
                process.wait()

        # Three nodes on one PostgreSQL database and one Redis.
        database = f"keyward_bench_{int(time.time())}"
        server, _ = DATABASE.rsplit("/", 1)
        subprocess.run(["psql", DATABASE, "-qc", f"CREATE DATABASE {database}"], check=True)
        nodes = []
        try:
            env = {"DATABASE_URL": f"{server}/{database}", "REDIS_URL": REDIS,
                   "KEYWARD_REDIS_KEY_PREFIX": prefix + "c"}
            root = None
            for name in ["a", "b", "c"]:
                data = tempfile.mkdtemp(dir=directory)
                process, base, key = start_server(BINARY, data, env, name)
                nodes.append((process, base))
                root = root or key
            for _, base in nodes:
                wait_ready(base, redis=True)
            plain, metered = seed(nodes[0][1], root)
            plain_lua = script(directory, root, plain, "plain3")
            metered_lua = script(directory, root, metered, "metered3")
            bases = [base for _, base in nodes]
            wrk(bases, metered_lua)
            p, m = measure(bases, plain_lua, metered_lua)
            row("three nodes + Redis + PostgreSQL, plain verify", p)
            row("three nodes + Redis + PostgreSQL, rate limit + credits", m, p[0])
        finally:
            for process, _ in nodes:
                process.terminate()
                process.wait()
            subprocess.run(["psql", DATABASE, "-qc", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"])


main()
