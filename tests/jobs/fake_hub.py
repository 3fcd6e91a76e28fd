"""A loopback HTTP server that answers the few requests huggingface_hub's ``snapshot_download`` makes,
for one repository held in memory: the revision (``/api/models/<repo>/revision/<rev>``), the file tree
(``/api/models/<repo>/tree/<sha>``) and the files (``HEAD``/``GET /<repo>/resolve/<sha>/<file>``, with
``Range`` requests answered 206). ``drop_once`` names files whose first ``GET`` is cut off half way (the
connection closes early), as an interrupted transfer is: the client must resume with a ``Range`` request.
Every request is recorded in ``requests`` (method, path, Range header). Nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


class FakeHub:
    def __init__(self, repo_id: str, files: dict[str, bytes], drop_once: tuple[str, ...] = ()) -> None:
        self.repo_id, self.files = repo_id, files
        self.sha = hashlib.sha1(repo_id.encode()).hexdigest()
        self.drop_once = set(drop_once)
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _json(self, h: BaseHTTPRequestHandler, data: Any) -> None:
        raw = json.dumps(data).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        self.requests.append((h.command, path, h.headers.get("Range")))
        api = f"/api/models/{self.repo_id}/"
        if path.startswith(api + "revision/"):
            return self._json(
                h, {"id": self.repo_id, "sha": self.sha, "siblings": [{"rfilename": f} for f in self.files]}
            )
        if path.startswith(api + "tree/"):
            return self._json(
                h,
                [
                    {"type": "file", "path": f, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                    for f, d in self.files.items()
                ],
            )
        prefix = f"/{self.repo_id}/resolve/"
        if not path.startswith(prefix):
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        name = path[len(prefix) :].split("/", 1)[1]
        if name not in self.files:
            h.send_response(404)
            h.send_header("X-Error-Code", "EntryNotFound")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = self.files[name]
        start = 0
        rng = h.headers.get("Range")
        if body and rng and rng.startswith("bytes="):
            start = int(rng[len("bytes=") :].split("-")[0])
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", self.sha)
        h.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        h.send_header("Content-Length", str(len(data) - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if not body:
            return
        if name in self.drop_once and not start:
            self.drop_once.discard(name)
            h.wfile.write(data[: len(data) // 2])  # then the connection closes: the transfer is cut off
            h.wfile.flush()
            h.close_connection = True
            return
        h.wfile.write(data[start:])
