"""A real HTTP server speaking OpenAI's /v1/embeddings, recording request headers.

It stands in for a remote embedding model only (as the scripted LLM does for chat): the
vectors are deterministic functions of the text so tests can reason about them.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Any input containing this makes the request fail with HTTP 500.
FAIL_MARKER = "FAIL-EMBEDDING"


def vector_for(text: str, dimension: int) -> list[float]:
    """A deterministic unit-ish vector from the text's hash."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dimension)]
    norm = sum(v * v for v in raw) ** 0.5
    return [v / norm for v in raw]


class EmbeddingsServer:
    """Serve on 127.0.0.1:0 in a thread; ``headers`` holds every request's headers."""

    def __init__(self, dimension: int = 8) -> None:
        self.dimension = dimension
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.headers.append({k.lower(): v for k, v in self.headers.items()})
                if any(FAIL_MARKER in text for text in body["input"]):
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data: dict[str, Any] = {
                    "object": "list",
                    "model": body["model"],
                    "data": [
                        {
                            "object": "embedding",
                            "index": i,
                            "embedding": vector_for(t, outer.dimension),
                        }
                        for i, t in enumerate(body["input"])
                    ],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
                payload = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> EmbeddingsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
