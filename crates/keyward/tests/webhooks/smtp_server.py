"""A real SMTP server for keyward's tests (aiosmtpd, from PyPI): records every message it
receives, one JSON line each: {"from", "to": [...], "data": the message as text}.

Usage: smtp_server.py RECORD_FILE. Prints "listening on PORT" once bound.
"""

import asyncio
import json
import socket
import sys

from aiosmtpd.controller import Controller

RECORD = sys.argv[1]


class Recorder:
    async def handle_DATA(self, server, session, envelope):
        with open(RECORD, "a", encoding="utf-8") as f:
            f.write(json.dumps({
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "replace"),
            }) + "\n")
        return "250 OK"


with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
controller = Controller(Recorder(), hostname="127.0.0.1", port=port)
controller.start()
print(f"listening on {port}", flush=True)
try:
    asyncio.new_event_loop().run_forever()
finally:
    controller.stop()
