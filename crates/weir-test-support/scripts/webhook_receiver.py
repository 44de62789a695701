"""A webhook receiver for weir's sink tests: checks every request's signature with the
Standard Webhooks reference verifier (PyPI `standardwebhooks`), checks that the same
request with a tampered body fails it, and logs each request as a JSON line.

    python3 webhook_receiver.py SECRET PORT_FILE LOG_FILE [--fail-first N] [--refuse-subject S] [--port P] [--hold-until K]

Answers 401 to a request that does not verify, 503 to the first N requests, 400 to events
whose subject is S, and 204 otherwise. Writes the port it listens on to PORT_FILE. With
--hold-until K, no request is answered before K requests were open at once (each open
request waits for that, up to 10 s, and is answered 503 if it never happens).
"""

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

parser = argparse.ArgumentParser()
parser.add_argument("secret")
parser.add_argument("port_file")
parser.add_argument("log_file")
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--refuse-subject", default=None)
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--hold-until", type=int, default=0)
args = parser.parse_args()

webhook = Webhook(args.secret)
lock = threading.Lock()
seen = {"requests": 0, "open": 0, "most_open": 0}
held = threading.Condition()


def hold():
    """False if --hold-until requests were never open at once within 10 s."""
    with held:
        seen["open"] += 1
        seen["most_open"] = max(seen["most_open"], seen["open"])
        held.notify_all()
        reached = held.wait_for(lambda: seen["most_open"] >= args.hold_until, timeout=10)
        seen["open"] -= 1
        return reached


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            webhook.verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        try:
            webhook.verify(body + b" ", headers)
            tamper_rejected = False
        except WebhookVerificationError:
            tamper_rejected = True
        event = json.loads(body) if body else {}
        held_enough = hold()
        with lock:
            seen["requests"] += 1
            n = seen["requests"]
            if not verified:
                status = 401
            elif n <= args.fail_first or not held_enough:
                status = 503
            elif args.refuse_subject is not None and event.get("subject") == args.refuse_subject:
                status = 400
            else:
                status = 204
            with open(args.log_file, "a") as log:
                log.write(json.dumps({
                    "id": headers.get("webhook-id"),
                    "timestamp": headers.get("webhook-timestamp"),
                    "verified": verified,
                    "tamper_rejected": tamper_rejected,
                    "status": status,
                    "event": event,
                }) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


ThreadingHTTPServer.allow_reuse_address = True
server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
with open(args.port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.replace(args.port_file + ".tmp", args.port_file)
server.serve_forever()
