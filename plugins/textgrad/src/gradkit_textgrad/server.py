"""A minimal OpenAI-compatible chat-completions server on 127.0.0.1, backed by any engine.

For tests and for exposing a local engine (e.g. SmolLM2 via ``TransformersEngine``) to OpenAI clients.
``fail_first`` answers the first N requests with ``fail_status`` (to exercise client retries), ``delay`` sleeps
before answering (timeouts).  Standard library only.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(self, engine, *, host="127.0.0.1", port=0, delay: float = 0.0, fail_first: int = 0,
                 fail_status: int = 500):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("ChatServer binds to loopback only")
        self.engine, self.delay, self.fail_first, self.fail_status = engine, delay, fail_first, fail_status
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, body):
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self):
                outer.requests += 1
                n = outer.requests
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if outer.delay:
                    time.sleep(outer.delay)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if n <= outer.fail_first:
                    return self._send(outer.fail_status, {"error": {"message": f"scripted failure {n}",
                                                                    "type": "server_error"}})
                msgs = body.get("messages") or []
                system = next((m["content"] for m in msgs if m.get("role") == "system"), None)
                user = [m["content"] for m in msgs if m.get("role") == "user"]
                if not user:
                    return self._send(400, {"error": {"message": "no user message"}})
                try:
                    reply = outer.engine(user[-1], system_prompt=system)
                except Exception as e:  # noqa: BLE001 -- reported to the client as an HTTP 500
                    return self._send(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
                self._send(200, {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                                 "model": body.get("model", "local"),
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": reply}}],
                                 "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://{host}:{self.port}/v1"
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
