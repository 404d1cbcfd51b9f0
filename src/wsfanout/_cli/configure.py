"""From resolved settings to what ``serve`` runs: options that agree, files that load.

:func:`build_options` checks what one option cannot check alone (a Unix socket and a
host, workers without Redis, a certificate without its key), loads the policy or the
routing file and the TLS files, and reads the tokens from the variables they are
named by. ``wsfanout check`` runs the same function on a configuration file, without
reading tokens (the variables are the server's, not the checker's).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from typing import IO

from .._core.builtins import DEFAULT_POLICY
from .._core.errors import PolicyFileError
from .._core.history import History
from .._core.policy import Policy
from .._files.presets import load_policy_file
from .._files.routes import Route, Routes, load_routes
from .._files.units import show_toml
from .input import is_pattern
from .listen import COMPRESSION, ListenError, TLSContext, ws_url
from .logs import LEVELS, LogSettings
from .options import SERVE_OPTIONS, Settings, Source
from .serve import NAMESPACE, ServeOptions

__all__ = ["CommandError", "build_options", "print_configuration"]


class CommandError(Exception):
    """An error to report in one line and exit 1."""


def build_options(settings: Settings, environ: Mapping[str, str] | None) -> ServeOptions:
    """The :class:`ServeOptions` the settings describe; ``environ`` holds the tokens'
    variables (``None``: do not read them, as ``check`` does).

    Raises :class:`UsageError` or :class:`PolicyFileError` (through
    :meth:`Settings.fail`) for options that disagree, :class:`PolicyFileError` for a
    policy or routing file, and :class:`CommandError` for a missing extra.
    """
    routes, describe = _routes(settings)
    token = _secret(settings, "token_env", environ)
    publish_token = _secret(settings, "publish_token_env", environ)
    http_publish = bool(settings["http_publish"])
    if settings.given("publish_token_env"):
        if settings.given("http_publish") and not http_publish:
            raise settings.fail(
                "publish_token_env",
                f"needs {settings.name('http_publish', like='publish_token_env')}, which is off",
            )
        http_publish = True
    _check_listening(settings)
    workers, channels = _check_scaling(settings)
    return ServeOptions(
        routes=routes,
        describe=describe,
        host=settings["host"],
        port=settings["port"],
        unix=settings["unix"],
        tls=_tls(settings),
        compression=settings["compression"],
        origins=settings["origins"],
        token=token,
        max_clients=settings["max_clients"],
        max_handshakes=settings["max_handshakes"],
        handshake_timeout=settings["handshake_timeout"],
        max_size=settings["max_size"],
        exit_on_eof=settings["exit_on_eof"],
        wait_clients=settings["wait_clients"] or 0,
        key_field=settings["key_field"],
        topic_field=settings["topic_field"],
        http_publish=http_publish,
        publish_token=publish_token,
        publish_max_size=settings["publish_max_size"],
        close_timeout=settings["close_timeout"],
        drain_timeout=settings["drain_timeout"],
        quiet=settings["quiet"],
        redis=settings["redis"],
        workers=workers,
        input_channels=channels,
        history=_history(settings),
        heartbeat=settings["heartbeat"] or None,
        warnings=settings.warnings,
        log=_log_settings(settings),
        admin=_admin(settings, workers),
    )


def _history(settings: Settings) -> History | None:
    """``history`` and the bounds that refine it, as a :class:`History`."""
    if settings["history"] is None:
        for key in ("history_bytes", "history_age"):
            if settings.given(key):
                raise settings.fail(
                    key,
                    f"needs {settings.name('history', like=key)} "
                    "(how many messages of each topic to keep)",
                )
        return None
    return History(
        max_messages=settings["history"],
        max_bytes=settings["history_bytes"],
        max_age=settings["history_age"],
    )


def _log_settings(settings: Settings) -> LogSettings:
    """``-q`` is ``log_level = "notice"`` unless a level is given."""
    name = settings["log_level"] or ("notice" if settings["quiet"] else "info")
    return LogSettings(
        level=LEVELS[name], format=settings["log_format"], drops_every=settings["log_drops_every"]
    )


def _admin(settings: Settings, workers: int) -> tuple[str, int] | None:
    address: tuple[str, int] | None = settings["admin"]
    if address is not None and workers > 1:
        raise settings.fail(
            "admin",
            f"needs a single process, not {settings.where('workers')}: each worker "
            "serves its own clients",
        )
    return address


def _from_file(settings: Settings, key: str, error: PolicyFileError) -> PolicyFileError:
    """A policy or routing file's error, prefixed with the configuration file's key
    when the name came from there."""
    if settings.sources[key] is not Source.FILE:
        return error
    assert settings.config is not None
    return PolicyFileError(
        f"{settings.config}: {key}: {error}", filename=settings.config, key=key, value=error
    )


def _routes(settings: Settings) -> tuple[Routes, str]:
    try:
        if settings["routes"] is not None:
            return load_routes(settings["routes"]), f"routes {settings['routes']}"
        if settings["policy"] is not None:
            loaded = load_policy_file(settings["policy"])
            name = settings["policy"]
            return Routes((), Route(policy=loaded.policy, policy_name=name)), f"policy {name}"
    except PolicyFileError as exc:
        raise _from_file(settings, "routes" if settings["routes"] else "policy", exc) from None
    default = Route(policy=DEFAULT_POLICY, policy_name="default")
    return Routes((), default), "policy default"


def _secret(settings: Settings, key: str, environ: Mapping[str, str] | None) -> str | None:
    variable = settings[key]
    if variable is None or environ is None:
        return None
    token = environ.get(variable)
    if token is None:
        raise settings.fail(key, "that environment variable is not set")
    # Whitespace around it (a token file's newline) is never part of a token.
    token = token.strip()
    if not token:
        raise settings.fail(key, "that environment variable is empty")
    return token


def _tls(settings: Settings) -> TLSContext | None:
    cert, key = settings["tls_cert"], settings["tls_key"]
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        given, missing = ("tls_cert", "tls_key") if key is None else ("tls_key", "tls_cert")
        raise settings.fail(given, f"needs {settings.name(missing, like=given)} too")
    try:
        return TLSContext(cert, key)
    except ListenError as exc:  # bad input, as a bad policy file is: exit 2
        raise settings.fail("tls_cert", str(exc)) from None


def _check_listening(settings: Settings) -> None:
    if settings["unix"] is None:
        return
    for key in ("host", "port"):
        if settings.given(key):
            raise settings.fail(
                key,
                f"give {settings.name('unix', like=key)} or a host and port, not both",
            )
    if settings["workers"] > 1:
        raise settings.fail(
            "workers",
            "needs a host and port: worker processes share a TCP port, not a Unix socket",
        )


def _check_scaling(settings: Settings) -> tuple[int, tuple[str, ...]]:
    """The worker count and input channels, once the options agree with each other."""
    channels = tuple(dict.fromkeys(settings["input_channels"] or ()))
    workers: int = settings["workers"]
    if settings["redis"] is None:
        for key, why in (
            ("workers", " (worker processes share messages through it)"),
            ("input_channels", ""),
        ):
            if settings.given(key):
                raise settings.fail(key, f"needs {settings.name('redis', like=key)}{why}")
        return 1, ()
    if importlib.util.find_spec("redis") is None:
        raise CommandError("--redis needs redis-py: pip install 'wsfanout[redis]'")
    if workers > 1:
        for key in ("exit_on_eof", "wait_clients"):
            if settings[key]:
                raise settings.fail(
                    key,
                    f"needs a single process, not {settings.where('workers')} "
                    "(the process reading standard input has no clients of its own)",
                )
    ours = (f"{NAMESPACE}:all", f"{NAMESPACE}:topic:x", f"{NAMESPACE}:heartbeat")
    for name in channels:
        if name.startswith(f"{NAMESPACE}:") or (
            is_pattern(name) and any(fnmatchcase(channel, name) for channel in ours)
        ):
            raise settings.fail(
                "input_channels",
                f"the backplane's own channels ({NAMESPACE}:*) already reach every "
                "client; name another channel",
                item=name,
            )
    return workers, channels


# -- check ---------------------------------------------------------------------------


def print_configuration(
    settings: Settings,
    options: ServeOptions,
    describe: Callable[[Policy], list[str]],
    out: IO[str],
) -> None:
    """What ``check`` prints about a configuration file: where the server would listen,
    with which compression and policies (``describe`` says what a policy does), and
    every option's value."""
    if options.unix is not None:
        where = f"unix:{options.unix}"
    else:
        where = ws_url(options.host, options.port, tls=options.tls is not None)
    print(f"  listen:      {where}", file=out)
    print(f"  compression: {options.compression}: {COMPRESSION[options.compression]}", file=out)
    print(f"  policy:      {options.describe.split(' ', 1)[1]}", file=out)
    routes = options.routes
    for n, route in enumerate((*routes.routes, routes.default)):
        indent = "    "
        if routes.routes:
            name = f"route[{n}]" if route is not routes.default else "default"
            topics = "" if route.topics is None else f", topics {show_toml(list(route.topics))}"
            print(f"    {name}: {route.describe()} -> {route.policy_name}{topics}", file=out)
            indent = "      "
        for line in describe(route.policy):
            print(f"{indent}{line}", file=out)
    print("  options:", file=out)
    for opt in SERVE_OPTIONS:
        value = settings[opt.key]
        if value is None:
            continue
        shown = (
            [opt.kind.to_toml(item) for item in value]
            if opt.repeatable
            else opt.kind.to_toml(value)
        )
        default = "" if settings.given(opt.key) else "  # default"
        print(f"    {opt.key} = {show_toml(shown)}{default}", file=out)
