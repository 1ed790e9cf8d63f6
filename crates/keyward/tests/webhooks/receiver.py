"""A webhook receiver for keyward's tests: verifies every delivery with the Standard Webhooks
library (`standardwebhooks`, from PyPI) and records what it got, one JSON line per delivery:
{"id": webhook-id, "verified": bool, "error": str|null, "body": the raw body as text}.

Usage: receiver.py SECRET RECORD_FILE [PORT]. Prints "listening on PORT" once bound.
Answers 204 to a verified delivery, 401 to one that does not verify.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

SECRET, RECORD = sys.argv[1], sys.argv[2]
PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 0
WEBHOOK = Webhook(SECRET)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            WEBHOOK.verify(body, headers)
            verified, error = True, None
        except Exception as e:  # the library's WebhookVerificationError, or anything else
            verified, error = False, repr(e)
        with open(RECORD, "a", encoding="utf-8") as f:
            f.write(json.dumps({
                "id": headers.get("webhook-id"),
                "verified": verified,
                "error": error,
                "body": body.decode("utf-8"),
            }) + "\n")
        self.send_response(204 if verified else 401)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.allow_reuse_address = True
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
