"""Fixtures for the command-line tests."""

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from cli_process import GUARD, Process

from harness.redis_server import RedisServer


@pytest.fixture
def wsfanout() -> Iterator[type[Process]]:
    started: list[Process] = []

    class Started(Process):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield Started
    for process in started:
        process.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own on a free port, stopped afterwards."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@attrs.frozen
class Certificate:
    """A throwaway self-signed certificate for 127.0.0.1 and localhost, and a client
    context that trusts it."""

    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert))
        return context


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is missing: make debian-packages installs it"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key)),
            *("-out", str(cert), "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
        timeout=GUARD,
    )
    return Certificate(cert, key)
