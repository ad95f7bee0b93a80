"""fetch_url and copy_archive: verified, resumable, atomic; clear advice when offline."""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import os
import threading

import pytest

from gestural.core import progress as progress_module
from gestural.core.progress import Progress
from gestural.data import download
from gestural.data.download import DownloadError, copy_archive, fetch_url, sha256_of

PAYLOAD = os.urandom(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
HALF = len(PAYLOAD) // 2


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(download, "RETRY_BACKOFF_S", 0.0)


@pytest.fixture
def serve():
    """Start a local HTTP server for PAYLOAD at /emadata.tgz; returns (url, requests).

    ``requests`` collects the Range header of every request (None when absent).
    Unlike http.server's own handlers, this one answers Range requests with
    206 Partial Content (or 416 when the range starts past the end).
    """
    servers = []

    def start(*, support_range=True, cut_first_response=False):
        requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):
                byte_range = self.headers.get("Range")
                requests.append(byte_range)
                if self.path != "/emadata.tgz":
                    self.send_error(404)
                    return
                start = 0
                if byte_range and support_range:
                    start = int(byte_range.removeprefix("bytes=").rstrip("-"))
                    if start >= len(PAYLOAD):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if cut_first_response and len(requests) == 1:
                    body = body[:HALF]  # then the connection closes: a dropped download
                self.wfile.write(body)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/emadata.tgz", requests

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _listing(directory):
    return sorted(p.name for p in directory.iterdir())


def test_sha256_of_matches_hashlib(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    assert sha256_of(path) == PAYLOAD_SHA


def test_file_url_gives_identical_bytes(tmp_path):
    src = tmp_path / "src" / "emadata.tgz"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "emadata.tgz"

    digest = fetch_url(src.as_uri(), dest, sha256=PAYLOAD_SHA.upper())

    assert digest == PAYLOAD_SHA
    assert dest.read_bytes() == PAYLOAD
    assert _listing(dest.parent) == ["emadata.tgz"]  # no .part or temp left


def test_wrong_sha256_is_refused_and_nothing_written(tmp_path):
    src = tmp_path / "emadata-src.tgz"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "emadata.tgz"
    wrong = "0" * 64

    with pytest.raises(DownloadError, match="sha256 mismatch") as excinfo:
        fetch_url(src.as_uri(), dest, sha256=wrong)

    assert wrong in str(excinfo.value) and PAYLOAD_SHA in str(excinfo.value)
    assert _listing(dest.parent) == []  # neither dest nor the bad partial


def test_unreachable_url_explains_the_alternatives(tmp_path):
    dest = tmp_path / "emadata.tgz"
    with pytest.raises(DownloadError) as excinfo:
        fetch_url("http://127.0.0.1:9/emadata.tgz", dest, retries=2, timeout=0.5)

    message = str(excinfo.value)
    assert "could not be reached" in message
    assert "2 attempt(s)" in message
    for advice in ("data.source: archive", "data.archive:", "dvc exp run -S data.source=archive",
                   "data.source: synthetic"):
        assert advice in message
    assert not dest.exists()


def test_missing_file_url_is_not_retried_as_network_error(tmp_path):
    with pytest.raises(DownloadError, match="no such file"):
        fetch_url((tmp_path / "absent.tgz").as_uri(), tmp_path / "emadata.tgz")


def test_http_404_fails_at_once(tmp_path, serve):
    url, requests = serve()
    with pytest.raises(DownloadError, match="404") as excinfo:
        fetch_url(url.replace("emadata", "nothing"), tmp_path / "emadata.tgz", retries=3)
    assert "data.source: synthetic" in str(excinfo.value)
    assert len(requests) == 1  # a wrong URL does not get better by retrying


def test_resume_sends_range_and_completes(tmp_path, serve):
    url, requests = serve()
    dest = tmp_path / "emadata.tgz"
    (tmp_path / "emadata.tgz.part").write_bytes(PAYLOAD[:HALF])

    digest = fetch_url(url, dest, sha256=PAYLOAD_SHA)

    assert requests == [f"bytes={HALF}-"]
    assert digest == PAYLOAD_SHA
    assert dest.read_bytes() == PAYLOAD
    assert _listing(tmp_path) == ["emadata.tgz"]


def test_server_without_range_support_starts_over(tmp_path, serve):
    url, requests = serve(support_range=False)
    dest = tmp_path / "emadata.tgz"
    (tmp_path / "emadata.tgz.part").write_bytes(b"\0" * HALF)  # would corrupt the file if appended to

    assert fetch_url(url, dest, sha256=PAYLOAD_SHA) == PAYLOAD_SHA
    assert requests == [f"bytes={HALF}-"]
    assert dest.read_bytes() == PAYLOAD


def test_dropped_connection_is_resumed_on_retry(tmp_path, serve):
    url, requests = serve(cut_first_response=True)
    partial_dir = tmp_path / "partial"
    dest = tmp_path / "out" / "emadata.tgz"

    assert fetch_url(url, dest, sha256=PAYLOAD_SHA, retries=2, partial_dir=partial_dir) == PAYLOAD_SHA

    assert requests == [None, f"bytes={HALF}-"]
    assert dest.read_bytes() == PAYLOAD
    assert _listing(partial_dir) == []


def test_complete_partial_is_accepted_on_416(tmp_path, serve):
    url, requests = serve()
    dest = tmp_path / "emadata.tgz"
    (tmp_path / "emadata.tgz.part").write_bytes(PAYLOAD)

    assert fetch_url(url, dest) == PAYLOAD_SHA
    assert requests == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_copy_archive_missing_file_names_path_and_param(tmp_path):
    missing = tmp_path / "nowhere" / "emadata.tgz"
    with pytest.raises(DownloadError) as excinfo:
        copy_archive(missing, tmp_path / "out.tgz")
    assert str(missing) in str(excinfo.value)
    assert "data.archive" in str(excinfo.value)
    assert not (tmp_path / "out.tgz").exists()


def test_copy_archive_copies_and_verifies(tmp_path):
    src = tmp_path / "emadata.tgz"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "data" / "emadata.tgz"

    assert copy_archive(src, dest, sha256=PAYLOAD_SHA) == PAYLOAD_SHA
    assert dest.read_bytes() == PAYLOAD

    dest.write_bytes(b"previous")
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        copy_archive(src, dest, sha256="f" * 64)
    assert dest.read_bytes() == b"previous"  # untouched, and no temp file beside it
    assert _listing(dest.parent) == ["emadata.tgz"]


def test_download_progress_is_a_line_per_tenth_in_a_log_and_a_bar_on_a_terminal(tmp_path, monkeypatch, caplog):
    src = tmp_path / "emadata.tgz"
    src.write_bytes(PAYLOAD)
    monkeypatch.setattr(download, "_CHUNK_BYTES", 10_000)  # 30 chunks
    monkeypatch.setattr(progress_module, "QUIET_FOR_S", 0.0)  # as if the network were slow
    with caplog.at_level(logging.INFO, logger="gestural.core.progress"):
        fetch_url(src.as_uri(), tmp_path / "out" / "emadata.tgz")
    lines = [r.getMessage() for r in caplog.records if r.name == "gestural.core.progress"]
    assert len(lines) == 10 and all("\r" not in line for line in lines)
    assert lines[0].startswith("downloading emadata.tgz: 29.3 KiB of 293.0 KiB (10 %)")
    assert lines[-1].startswith("downloading emadata.tgz: 293.0 KiB of 293.0 KiB (100 %)")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    caplog.clear()
    with Progress(len(PAYLOAD), "downloading emadata.tgz", "B", stream=terminal) as progress:
        for _ in range(30):
            progress.update(10_000)
    assert "100%" in terminal.getvalue() and "\r" in terminal.getvalue()  # tqdm's bar
    assert not [r for r in caplog.records if r.name == "gestural.core.progress"]


def test_a_quick_download_logs_no_progress(tmp_path, caplog):
    src = tmp_path / "emadata.tgz"
    src.write_bytes(PAYLOAD)
    with caplog.at_level(logging.INFO, logger="gestural.core.progress"):
        fetch_url(src.as_uri(), tmp_path / "out" / "emadata.tgz")
    assert not [r for r in caplog.records if r.name == "gestural.core.progress"]
