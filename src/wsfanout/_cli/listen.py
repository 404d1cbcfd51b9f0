"""Where and how ``serve`` listens: an address or a Unix socket, TLS and compression.

Each setting is turned into keyword arguments of websockets' ``serve()`` here, once,
for one process and for worker processes alike: whatever goes to workers is pickled,
so the TLS context pickles as the names of its files and each worker loads them again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import stat
from collections.abc import Mapping
from typing import Any

from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

__all__ = [
    "COMPRESSION",
    "ListenError",
    "TLSContext",
    "cannot_listen",
    "compression_settings",
    "remove_socket",
    "ws_url",
]


class ListenError(Exception):
    """The server cannot listen where it was told (a host, a socket path, a certificate)."""


# -- compression ---------------------------------------------------------------------

COMPRESSION: Mapping[str, str] = {
    "shared": "permessage-deflate without context takeover: each message is compressed "
    "once, and the frame shared by every client that accepts it",
    "per-connection": "permessage-deflate with websockets' defaults: a compressor per "
    "client, each compressing every message again",
    "off": "no compression: every client receives the same plain frame",
}
"""The compression modes, and what each does, for ``check`` and the docs."""


def shared_deflate_factory() -> ServerPerMessageDeflateFactory:
    """permessage-deflate that lets one compressed frame serve every client.

    ``server_no_context_takeover`` makes each message's compression independent of the
    ones before, so the hub compresses it once for everyone (docs/performance.md,
    "Compression: recommended settings"); ``client_no_context_takeover`` spares the
    server a decompressor per client, which subscribers, who hardly talk, never need.
    The window and memory settings are websockets' defaults.
    """
    return ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=12,
        client_max_window_bits=12,
        compress_settings={"memLevel": 5},
    )


def compression_settings(mode: str) -> dict[str, Any]:
    """websockets' ``serve()`` keyword arguments for a compression mode."""
    if mode == "shared":
        return {"compression": None, "extensions": [shared_deflate_factory()]}
    if mode == "per-connection":
        return {"compression": "deflate"}
    if mode == "off":
        return {"compression": None}
    raise ValueError(f"compression={mode!r} is not one of {', '.join(COMPRESSION)}")


# -- TLS -----------------------------------------------------------------------------


def _no_password() -> str:
    raise ListenError("the private key is encrypted; give serve a key without a passphrase")


class TLSContext(ssl.SSLContext):
    """A server TLS context loaded from a certificate chain and a key file.

    It pickles as those two file names (an ``SSLContext`` does not pickle), so a worker
    process builds its own from the same files.
    """

    cert: str
    key: str

    def __new__(cls, cert: str, key: str) -> TLSContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)

    def __init__(self, cert: str, key: str) -> None:
        self.cert = cert
        self.key = key
        try:
            self.load_cert_chain(cert, key, password=_no_password)
        except FileNotFoundError as exc:
            missing = cert if not os.path.exists(cert) else key
            raise ListenError(f"{missing}: no such file") from exc
        except ssl.SSLError as exc:  # before OSError, of which it is a subclass
            # OpenSSL's reason (KEY_VALUES_MISMATCH), or none for a file that is not PEM.
            why = exc.reason.replace("_", " ").lower() if exc.reason else "not PEM"
            raise ListenError(
                f"cannot load the certificate {cert} with the key {key}: {why} "
                "(expected a PEM certificate chain and its unencrypted PEM private key)"
            ) from None
        except OSError as exc:
            raise ListenError(f"cannot read {exc.filename or cert}: {exc.strerror}") from exc

    def __reduce__(self) -> tuple[Any, ...]:
        return (TLSContext, (self.cert, self.key))


# -- addresses -----------------------------------------------------------------------


def ws_url(host: str, port: int, *, tls: bool) -> str:
    scheme = "wss" if tls else "ws"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def cannot_listen(exc: OSError, where: str) -> str:
    """Why the server cannot listen at ``where``, in words: a host that does not
    resolve, a port in use, a path that cannot hold a socket."""
    if isinstance(exc, socket.gaierror):
        return f"cannot listen on {where}: cannot resolve the host ({exc.strerror})"
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"cannot listen on {where}: {why}"


def check_socket_path(path: str) -> None:
    """Refuse a socket path that another server listens on, or that holds a file.

    asyncio removes a socket file that is in the way, even one in use: this checks
    first, so a second server never silently takes the first one's path.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ListenError(f"cannot listen on unix:{path}: a file that is not a socket is there")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return  # a stale socket file: no one listens, asyncio replaces it
        raise ListenError(f"cannot listen on unix:{path}: {os.strerror(exc.errno or 0)}") from None
    finally:
        probe.close()
    raise ListenError(f"cannot listen on unix:{path}: another server is listening there")


def remove_socket(path: str, inode: int | None) -> None:
    """Remove the socket file this server created (``inode``), not one that replaced it."""
    with contextlib.suppress(OSError):
        if inode is not None and os.stat(path).st_ino == inode:
            os.unlink(path)
