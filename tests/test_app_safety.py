"""The web app's guards: a login for a host other machines can reach, no uploads accepted or kept after the
server stops, and one log line (never a traceback) for each request the server refuses."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")

import superlora.app.ui as ui  # noqa: E402  (sets the offline environment before Gradio loads)
from app_support import free_port, planted_model_dir, serve  # noqa: E402
from superlora.app.limits import Limits  # noqa: E402
from superlora.app.state import AppState  # noqa: E402
from superlora.cli import main  # noqa: E402
from superlora.errors import SuperloraError  # noqa: E402

LOGIN = ("alice", "s3cret:with-colon")  # a password may contain colons: split at the first one


class ModelLoadReached(Exception):
    """Raised by the stubbed model loader: the CLI got past its checks."""


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    model = planted_model_dir(tmp_path_factory.mktemp("safety") / "model")
    return AppState.load(str(model), [], limits=Limits())


@pytest.fixture(scope="module")
def open_url(state):
    """The app served without a login on a loopback port."""
    demo, url = serve(state)
    yield url.rstrip("/")
    demo.close()


@pytest.fixture(scope="module")
def guarded_url(state):
    """The app served behind ``LOGIN``."""
    demo = ui.build_app(state)
    port = free_port()
    ui.launch(demo, "127.0.0.1", port, block=False, auth=LOGIN)
    yield f"http://127.0.0.1:{port}"
    demo.close()


@pytest.fixture(autouse=True)
def no_login_in_environment(monkeypatch):
    monkeypatch.delenv("SUPERLORA_AUTH", raising=False)


@pytest.fixture
def stub_loader(monkeypatch):
    """``AppState.load`` that stops the CLI right there; returns the list of its calls."""
    calls = []

    def load(*args, **kwargs):
        calls.append(args)
        raise ModelLoadReached

    monkeypatch.setattr(AppState, "load", staticmethod(load))
    return calls


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    code = main(["serve", *argv])
    return code, capsys.readouterr().err


# --- uploads and the temp folder ---


def test_an_upload_over_1_kb_is_refused_with_413_and_nothing_is_stored(open_url):
    reply = httpx.post(f"{open_url}/gradio_api/upload", files={"files": ("big-upload.bin", b"x" * 2_000_000)})
    assert reply.status_code == 413
    assert not list(Path(os.environ["GRADIO_TEMP_DIR"]).rglob("big-upload.bin"))


SERVE_SCRIPT = """
import sys
import gradio as gr
import superlora.app.ui as ui
with gr.Blocks() as demo:
    gr.Textbox()
ui.launch(demo, "127.0.0.1", int(sys.argv[1]), block=True)
"""


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_gradio_temp_folder_is_private_and_removed_when_the_server_stops(tmp_path, stop):
    """What a client uploaded lies in a 0700 folder of this server's own, gone once the server is stopped."""
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_TEMP_DIR", "SUPERLORA_GRADIO_TEMP")}
    (tmp_path / "tmp").mkdir()
    env |= {"SUPERLORA_CACHE": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp")}
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT, str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        url = wait_until_serving(f"http://127.0.0.1:{port}", server)
        reply = httpx.post(f"{url}/gradio_api/upload", files={"files": ("small.txt", b"hello")})
        assert reply.status_code == 200
        uploaded = Path(reply.json()[0])
        folder = uploaded.parents[1]
        assert uploaded.is_file() and (folder.stat().st_mode & 0o077) == 0, "not a private folder"
        server.send_signal(stop)
        output = server.communicate(timeout=30)[0].decode()
    finally:
        server.kill()
    assert server.returncode == 0 and "Traceback" not in output, output
    assert not uploaded.exists() and not folder.exists()
    assert not list((tmp_path / "tmp").glob("superlora-gradio-*"))


def wait_until_serving(url: str, server: subprocess.Popen, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited: {server.stdout.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/", timeout=2).status_code == 200:
                return url
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"the server did not start within {timeout} s")


# --- a login for a reachable host ---


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5"])
def test_a_non_loopback_host_without_auth_is_refused_before_the_model_loads(host, stub_loader, capsys):
    code, err = run_cli(["--host", host], capsys)
    assert code == 2 and not stub_loader
    assert err.count("\n") == 1 and err.startswith(f"superlora: error: --host {host} ")
    assert "--auth USER:PASS" in err and "$SUPERLORA_AUTH" in err and "--insecure-no-auth" in err


@pytest.mark.parametrize(
    "argv, environ",
    [
        (["--auth", "alice:pw"], {}),
        ([], {"SUPERLORA_AUTH": "alice:pw"}),
        (["--insecure-no-auth"], {}),
    ],
    ids=["auth-flag", "auth-env", "insecure-no-auth"],
)
def test_a_login_or_insecure_no_auth_lets_a_non_loopback_host_reach_the_model_load(
    argv, environ, stub_loader, monkeypatch
):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ModelLoadReached):
        main(["serve", "--host", "0.0.0.0", *argv])
    assert len(stub_loader) == 1


@pytest.mark.parametrize(
    "argv, environ, source",
    [
        (["--auth", "alicesecret"], {}, "--auth"),
        (["--auth", "alice:"], {}, "--auth"),
        (["--auth", ":secret"], {}, "--auth"),
        ([], {"SUPERLORA_AUTH": "alicesecret"}, "$SUPERLORA_AUTH"),
        (["--auth", "bob:"], {"SUPERLORA_AUTH": "alice:secret"}, "--auth"),  # the flag wins over the environment
    ],
)
def test_a_malformed_login_is_one_line_that_never_echoes_it(argv, environ, source, stub_loader, monkeypatch, capsys):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    code, err = run_cli(argv, capsys)
    assert code == 2 and not stub_loader
    assert err == f"superlora: error: {source} must be USER:PASS with a non-empty user and password\n"
    assert "secret" not in err


@pytest.mark.parametrize("source", ["flag", "environment"])
def test_the_cli_login_guards_the_app_and_lets_the_right_user_in(source, state, monkeypatch, capsys):
    """`superlora serve --auth` / `$SUPERLORA_AUTH` end to end (a tiny model, the server on a loopback port)."""
    monkeypatch.setattr(AppState, "load", staticmethod(lambda *args, **kwargs: state))
    served = []

    def launch_in_background(demo, host, port, block=True, auth=None):
        served.append(demo)
        return real_launch(demo, host, port, block=False, auth=auth)

    real_launch = ui.launch
    monkeypatch.setattr(ui, "launch", launch_in_background)
    login = ":".join(LOGIN)
    argv = ["--auth", login] if source == "flag" else []
    if source == "environment":
        monkeypatch.setenv("SUPERLORA_AUTH", login)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        assert main(["serve", "--port", str(port), *argv]) == 0
        assert f"login required as {LOGIN[0]!r}" in capsys.readouterr().out
        assert_login_required(url)
    finally:
        for demo in served:
            demo.close()


def assert_login_required(url: str) -> None:
    """Anonymous requests get 401, a wrong password 400, the right login the app."""
    assert httpx.get(f"{url}/config").status_code == 401
    join = {"data": ["x"], "fn_index": 0, "session_hash": "anon"}
    assert httpx.post(f"{url}/gradio_api/queue/join", json=join).status_code == 401
    assert httpx.post(f"{url}/login", data={"username": LOGIN[0], "password": "wrong"}).status_code == 400
    with httpx.Client() as client:
        assert client.post(f"{url}/login", data={"username": LOGIN[0], "password": LOGIN[1]}).status_code == 200
        assert client.get(f"{url}/config").status_code == 200


def test_check_exposure_accepts_loopback_hosts_without_a_login():
    from superlora.app.access import check_exposure

    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        check_exposure(host, None, False)
    with pytest.raises(SuperloraError, match="--insecure-no-auth"):
        check_exposure("example.org", None, False)


# --- one log line per refused request ---


@pytest.fixture
def server_log(caplog):
    """Records of the app's logger and of uvicorn's error logger (where its tracebacks go)."""
    caplog.set_level(logging.INFO)
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(caplog.handler)
    yield caplog
    uvicorn_error.removeHandler(caplog.handler)


def test_refused_requests_are_logged_one_line_each_and_never_as_a_traceback(open_url, server_log):
    expected = {
        "refused GET /gradio_api/file=/etc/passwd from 127.0.0.1: 403 Forbidden": lambda: httpx.get(
            f"{open_url}/gradio_api/file=/etc/passwd"
        ),
        "refused POST /gradio_api/upload from 127.0.0.1: 413 ": lambda: httpx.post(
            f"{open_url}/gradio_api/upload", files={"files": ("big.bin", b"x" * 5000)}
        ),
        "failed POST /gradio_api/run/nope from 127.0.0.1: FnIndexInferError: ": lambda: httpx.post(
            f"{open_url}/gradio_api/run/nope", json={"data": ["x"]}
        ),
        "failed POST /gradio_api/queue/join from 127.0.0.1: KeyError: 999": lambda: httpx.post(
            f"{open_url}/gradio_api/queue/join", json={"data": ["x"], "fn_index": 999, "session_hash": "s"}
        ),
        "refused GET /gradio_api/file=\\x0aINFO forged line from 127.0.0.1: 40": lambda: httpx.get(
            f"{open_url}/gradio_api/file=%0AINFO forged line"
        ),
        "dropped POST /gradio_api/upload from 127.0.0.1: the client disconnected": lambda: hang_up_mid_upload(open_url),
    }
    for request in expected.values():
        request()
    wait_for(
        lambda: any(
            "Exception in ASGI" in r.getMessage() or "disconnected" in r.getMessage() for r in server_log.records
        )
    )
    assert_one_line_each(expected, server_log.records)


def test_a_wrong_login_is_logged_in_one_line(guarded_url, server_log):
    httpx.post(f"{guarded_url}/login", data={"username": LOGIN[0], "password": "wrong"})
    httpx.get(f"{guarded_url}/config")
    expected = [
        "refused POST /login from 127.0.0.1: 400 Bad Request (wrong user or password)",
        "refused GET /config from 127.0.0.1: 401 Unauthorized",
    ]
    assert_one_line_each(expected, server_log.records)


def assert_one_line_each(starts, records: list[logging.LogRecord]) -> None:
    """One app log line per expected start, none spanning lines, and no traceback from the app or uvicorn."""
    time.sleep(0.2)  # a stray traceback would be logged by now
    lines = [r.getMessage() for r in records if r.name == "superlora.app"]
    for start in starts:
        assert sum(line.startswith(start) for line in lines) == 1, (start, lines)
    assert all("\n" not in line for line in lines)
    tracebacks = [r.getMessage() for r in records if r.exc_info and r.levelno >= logging.WARNING]
    assert not tracebacks and not [r.getMessage() for r in records if r.name.startswith("uvicorn")]


def hang_up_mid_upload(url: str) -> None:
    """Start an upload that promises 100 kB, send 500 bytes, and close the connection."""
    port = int(url.rsplit(":", 1)[1])
    head = (
        "POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
        "Content-Type: multipart/form-data; boundary=zz\r\n\r\n"
    )
    part = b'--zz\r\nContent-Disposition: form-data; name="files"; filename="a.bin"\r\n\r\n' + b"x" * 500
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(head.encode() + part)
        time.sleep(0.3)


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.1)
