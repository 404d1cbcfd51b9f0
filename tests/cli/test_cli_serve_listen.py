"""Where and how ``wsfanout serve`` listens: TLS, a Unix socket, compression, bad hosts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
from pathlib import Path

import pytest
from cli_process import GUARD, Process, client
from conftest import Certificate
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.sync.client import unix_connect

from harness.redis_server import RedisServer
from wsfanout._cli.main import main


def compressible(n: int) -> str:
    return json.dumps({"n": n, "text": f"line {n} " * 300})


def test_a_wss_client_receives_through_tls(
    wsfanout: type[Process], certificate: Certificate
) -> None:
    tls = ["--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key)]
    server = wsfanout(["serve", "--port", "0", *tls])
    url = server.wait_for(r"^wsfanout: listening on (wss://127\.0\.0\.1:\d+) \(")[1]
    with client(url, "/", ssl=certificate.client_context()) as ws:
        server.wait_for("client connected")
        server.feed(f"{compressible(1)}\nb\n")
        assert [ws.recv(timeout=GUARD), ws.recv(timeout=GUARD)] == [compressible(1), "b"]
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_worker_processes_serve_tls_from_the_same_files(
    wsfanout: type[Process], certificate: Certificate, redis_server: RedisServer
) -> None:
    tls = ["--tls-cert", str(certificate.cert), "--tls-key", str(certificate.key)]
    scaling = ["--redis", redis_server.url, "--workers", "2"]
    server = wsfanout(["serve", "--port", "0", *tls, *scaling])
    url = server.wait_for(r"^wsfanout: listening on (wss://127\.0\.0\.1:\d+) \(")[1]
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(client(url, f"/c{n}", ssl=certificate.client_context()))
            for n in range(6)
        ]
        for n in range(len(clients)):
            server.wait_for(rf"client connected: .* /c{n} ")
        server.feed("over tls\n")
        assert [ws.recv(timeout=GUARD) for ws in clients] == ["over tls"] * len(clients)
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_a_certificate_that_does_not_load_is_an_error_naming_it(
    certificate: Certificate, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.pem"
    cases = [
        (
            ["--tls-cert", str(missing), "--tls-key", str(certificate.key)],
            f"--tls-cert {missing}: {missing}: no such file",
        ),
        (
            ["--tls-cert", str(certificate.key), "--tls-key", str(certificate.key)],
            f"--tls-cert {certificate.key}: cannot load the certificate {certificate.key} with "
            f"the key {certificate.key}: not PEM (expected a PEM certificate chain and its "
            "unencrypted PEM private key)",
        ),
    ]
    for flags, message in cases:
        with pytest.raises(SystemExit) as exited:  # bad input: a usage error
            main(["serve", "--port", "0", *flags])
        assert exited.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"wsfanout serve: error: {message}"
    config = tmp_path / "serve.toml"
    config.write_text(f'tls_cert = "missing.pem"\ntls_key = "{certificate.key}"\n')
    assert main(["check", str(config)]) == 2
    assert capsys.readouterr().err == (
        f'wsfanout check: error: {config}: tls_cert = "{missing}": {missing}: no such file\n'
    )


def test_a_unix_socket_serves_clients_and_is_removed_at_exit(
    wsfanout: type[Process], tmp_path: Path
) -> None:
    path = tmp_path / "wsfanout.sock"
    server = wsfanout(["serve", "--unix", str(path), "--http-publish"])
    assert server.wait_for(r"^wsfanout: listening on (\S+) \(")[1] == f"unix:{path}"
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    second = wsfanout(["serve", "--unix", str(path)])
    assert second.exit_code() == 1
    assert second.rest()[-1] == (
        f"wsfanout serve: error: cannot listen on unix:{path}: another server is listening there"
    )
    with unix_connect(str(path), "ws://localhost/?topic=t", open_timeout=GUARD) as ws:
        server.wait_for(r"client connected: unix /\?topic=t policy default topics t$")
        server.feed("over a unix socket\n")
        assert ws.recv(timeout=GUARD) == "over a unix socket"
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0
    assert not path.exists()


def test_a_stale_socket_file_is_replaced(wsfanout: type[Process], tmp_path: Path) -> None:
    import socket

    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as left_behind:  # bound, never listening: stale
        left_behind.bind(str(path))
    server = wsfanout(["serve", "--unix", str(path)])
    assert server.wait_for(r"^wsfanout: listening on (\S+) \(")[1] == f"unix:{path}"
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_a_host_that_does_not_resolve_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "nosuchhost.invalid", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "wsfanout serve: error: cannot listen on nosuchhost.invalid:0: cannot resolve the host ("
    ), err
    assert "Unknown error" not in err


@pytest.mark.parametrize(
    ("mode", "context_takeover"),
    [("shared", False), ("per-connection", True), ("off", None)],
)
def test_each_compression_mode_is_negotiated_as_the_listening_line_says(
    wsfanout: type[Process], mode: str, context_takeover: bool | None
) -> None:
    flags = [] if mode == "shared" else ["--compression", mode]
    server = wsfanout(["serve", "--port", "0", *flags])
    found = server.wait_for(r"^wsfanout: listening on (ws://\S+) \((.*)\)$")
    url = found[1]
    assert found[2] == f"policy default, compression {mode}"
    with client(url, "/") as ws:
        server.wait_for("client connected")
        extensions = ws.protocol.extensions
        if context_takeover is None:
            assert extensions == []
        else:
            assert len(extensions) == 1
            deflate = extensions[0]
            assert isinstance(deflate, PerMessageDeflate)
            # What the server compresses with: the client's view of the server's side.
            assert deflate.remote_no_context_takeover is not context_takeover
        lines = [compressible(n) for n in range(20)]
        server.feed("".join(f"{text}\n" for text in lines))
        assert [ws.recv(timeout=GUARD) for _ in lines] == lines
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0
