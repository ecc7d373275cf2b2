#!/usr/bin/env python3
"""A webhook receiver for Keyward's tests: it checks every delivery with the published
Standard Webhooks library (PyPI `standardwebhooks`), never with Keyward's own code.

Usage: webhook_receiver.py SECRET [SECRET…]   (prints "listening on <port>", then serves)

  POST /hook       a delivery. The answer follows the mode:
                     ok (200), fail (500), unavailable (503), hang (sleeps 60 s),
                     redirect (302 to /target, which records any request it gets).
  POST /_mode      body: the mode's name.
  POST /_secrets   body: space-separated secrets that the next deliveries are checked with.
  GET  /_received  JSON: every delivery that verified, in arrival order:
                   [{"id", "timestamp", "type", "data", "verified_with"}]; and
                   "rejected": how many failed verification, "redirected": requests to /target,
                   "requests": every POST /hook seen.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

lock = threading.Lock()
state = {
    "mode": "ok",
    "secrets": sys.argv[1:],
    "received": [],
    "rejected": 0,
    "redirected": 0,
    "requests": 0,
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length)

    def answer(self, status, body=b"", headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_received":
            with lock:
                body = json.dumps(
                    {
                        "received": state["received"],
                        "rejected": state["rejected"],
                        "redirected": state["redirected"],
                        "requests": state["requests"],
                    }
                ).encode()
            self.answer(200, body, {"content-type": "application/json"})
        else:
            self.answer(404)

    def do_POST(self):
        body = self.read_body()
        if self.path == "/_mode":
            with lock:
                state["mode"] = body.decode().strip()
            return self.answer(204)
        if self.path == "/_secrets":
            with lock:
                state["secrets"] = body.decode().split()
            return self.answer(204)
        if self.path == "/target":
            with lock:
                state["redirected"] += 1
            return self.answer(200, b"redirected here")
        if self.path != "/hook":
            return self.answer(404)
        headers = {name.lower(): value for name, value in self.headers.items()}
        with lock:
            state["requests"] += 1
            mode = state["mode"]
            secrets = list(state["secrets"])
        if mode == "hang":
            time.sleep(60)
            return self.answer(200)
        if mode == "redirect":
            return self.answer(302, b"", {"location": "/target"})
        if mode in ("fail", "unavailable"):
            status = 500 if mode == "fail" else 503
            return self.answer(status, b"receiver says no " + b"x" * 4000)
        verified_with = None
        payload = None
        for index, secret in enumerate(secrets):
            try:
                payload = Webhook(secret).verify(body, headers)
                verified_with = index
                break
            except WebhookVerificationError:
                continue
        with lock:
            if verified_with is None:
                state["rejected"] += 1
            else:
                state["received"].append(
                    {
                        "id": headers.get("webhook-id"),
                        "timestamp": headers.get("webhook-timestamp"),
                        "signatures": headers.get("webhook-signature", "").count("v1,"),
                        "type": payload.get("type"),
                        "data": payload.get("data"),
                        "raw": body.decode(),
                        "verified_with": verified_with,
                    }
                )
        self.answer(200 if verified_with is not None else 400, b"ok")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
