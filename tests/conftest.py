"""Shared test fixtures: a local HTTP server on 127.0.0.1 for download tests (never the internet).

It supports Range requests, records every request it saw, and can misbehave on demand (cut the body
short, ignore Range, answer 416 / 503 / a wrong 206, stall).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


# ----------------------------------------------------------------------------------- test server
@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    cut_after: int | None = None  # body bytes sent before closing the connection...
    cut_count: int = 0  # ...for this many of the next GET requests
    fail_status: int | None = None  # answer this status...
    fail_count: int = 0  # ...for this many of the next GET requests
    ignore_range: bool = False  # answer 200 with the whole body even when asked for a range
    bad_206: bool = False  # answer 206 for the wrong range (always from byte 0)
    omit_416_content_range: bool = False
    stall_s: float = 0.0  # pause this long in the middle of the body...
    stall_count: int = 0  # ...for this many of the next GET requests
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self) -> list[dict]:
        return [r for r in self.requests if r["method"] == "GET"]


class _Handler(BaseHTTPRequestHandler):
    timeout = 10  # socket timeout: a stuck client cannot hold a handler thread forever
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr logging
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        st = self.server.state
        rng = self.headers.get("Range")
        with st.lock:
            st.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "range": rng,
                    "user_agent": self.headers.get("User-Agent"),
                }
            )
            fail = cut = None
            stall = 0.0
            if not head and st.stall_count > 0:
                st.stall_count -= 1
                stall = st.stall_s
            if not head and st.fail_count > 0:
                st.fail_count -= 1
                fail = st.fail_status
            elif not head and st.cut_count > 0:
                st.cut_count -= 1
                cut = st.cut_after
        if fail is not None:
            self.send_error(fail)
            return
        data = st.files.get(self.path.split("?", 1)[0])
        if data is None:
            self.send_error(404)
            return

        status, body, extra = 200, data, {}
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if m and not st.ignore_range and not head:
            start = int(m.group(1))
            if st.bad_206:
                status, body = 206, data
                extra["Content-Range"] = f"bytes 0-{len(data) - 1}/{len(data)}"
            elif start >= len(data):
                self.send_response(416)
                if not st.omit_416_content_range:
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            else:
                status, body = 206, data[start:]
                extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"

        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if head:
            return
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True  # the server closes the socket: the body ends early
            return
        if stall:
            half = len(body) // 2
            self.wfile.write(body[:half])
            self.wfile.flush()
            time.sleep(stall)  # the client times out meanwhile
            body = body[half:]
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: ServerState):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state

    def handle_error(self, request, client_address):
        pass  # broken pipes after a client gave up are expected here


@dataclass
class Served:
    state: ServerState
    base: str

    @property
    def requests(self) -> list[dict]:
        return self.state.requests

    def gets(self) -> list[dict]:
        return self.state.gets()

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def add(self, name: str, data: bytes) -> str:
        self.state.files[f"/{name}"] = data
        return self.url(name)


@pytest.fixture
def server():
    state = ServerState()
    srv = _Server(state)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        host, port = srv.server_address[:2]
        yield Served(state, f"http://{host}:{port}")
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors on a shared 2-core machine: one intra-op thread is faster and steadier; restored after
    the module (use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------- test order
#: The longest tests, in falling order of their time on 2 cores (about 10, 3, 2.5, 2, 1.5 and 2 minutes): `make test`
#: runs the suite on two xdist workers (--dist load), and a long test started last would run alone at the end.
LONGEST_FIRST = (
    "tests/test_rehearsal.py::test_paper_size_rehearsal",
    "tests/test_folder_dataset.py::test_folder_datasets_run_end_to_end",
    "tests/test_workflow.py::test_tiny_demo_runs_end_to_end",
    "tests/test_slurm.py::test_workflow_runs_on_a_slurm_cluster",
    "tests/test_model_identity.py::test_a_key_changes_the_identity",
    "tests/test_faults.py::",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        return next((i for i, p in enumerate(LONGEST_FIRST) if item.nodeid.startswith(p)), len(LONGEST_FIRST))

    items.sort(key=rank)  # stable: every other test keeps its place
