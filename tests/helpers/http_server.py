"""A local HTTP file server for download tests: Range support, request log and failure switches.

The standard library's ``SimpleHTTPRequestHandler`` ignores Range headers, so this handler implements them
(``bytes=START-`` and ``bytes=START-END``): 206 with Content-Range, 416 past the end. Switches on the running
server make it ignore ranges, drop the connection after some body bytes, answer 404, or hold back its answer
until the server stops (to provoke client time-outs), or leave out Content-Length (so only the closing connection
ends the body). Every request is recorded with what was sent back.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class ServedRequest:
    """One request the server answered: the file path, its Range header, the status and body bytes sent."""

    path: str
    range: str | None
    status: int
    body_bytes: int


class FileServer:
    """Serves the files in ``folder`` on 127.0.0.1 (a free port) from a background thread.

    Attributes to switch behaviour while running: ``ignore_range`` (always answer 200 with the whole file),
    ``drop_after`` (send only this many body bytes, then close the connection), ``not_found`` (answer 404 to
    everything), ``stall`` (send nothing until the server stops), ``omit_length`` (send no Content-Length header).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ignore_range = False
        self.drop_after: int | None = None
        self.not_found = False
        self.stall = False
        self.omit_length = False
        self.requests: list[ServedRequest] = []
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        """The address of file ``name`` in the served folder."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def _handler_for(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if server.stall:
                server._stopping.wait()
                return
            path = server.folder / unquote(urlsplit(self.path).path).lstrip("/")
            requested_range = self.headers.get("Range")
            if server.not_found or not path.is_file() or server.folder.resolve() not in path.resolve().parents:
                self._answer(404, {}, b"", requested_range)
                return
            data = path.read_bytes()
            match = _RANGE.match(requested_range or "")
            if match is None or server.ignore_range:
                self._answer(200, {}, data, requested_range)
                return
            start = int(match.group(1))
            if start >= len(data):
                self._answer(416, {"Content-Range": f"bytes */{len(data)}"}, b"", requested_range)
                return
            end = min(int(match.group(2)), len(data) - 1) if match.group(2) else len(data) - 1
            content_range = f"bytes {start}-{end}/{len(data)}"
            self._answer(206, {"Content-Range": content_range}, data[start : end + 1], requested_range)

        def _answer(self, status: int, headers: dict[str, str], body: bytes, requested_range: str | None) -> None:
            sent = body if server.drop_after is None else body[: server.drop_after]
            # Recorded before anything goes out (the headers are written unbuffered, and a client given an empty
            # body is done once it has them), so a client that has its answer always finds the record.
            server.requests.append(ServedRequest(self.path, requested_range, status, len(sent)))
            self.send_response(status)
            length = {} if server.omit_length else {"Content-Length": str(len(body))}
            for name, value in {**headers, **length}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(sent)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            """Keep test output quiet."""

    return Handler


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """A running :class:`FileServer` serving ``tmp_path / "served"`` (created empty)."""
    folder = tmp_path / "served"
    folder.mkdir()
    with FileServer(folder) as server:
        yield server
