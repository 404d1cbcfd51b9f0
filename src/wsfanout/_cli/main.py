"""The ``wsfanout`` command: ``serve``, ``demo`` and ``check``.

Exit codes are a shell user's: 0 success, 1 a failure to run (a port in use, Redis
unreachable, a worker that died), 2 bad input (a usage error, argparse's, or a bad
policy or routing file), 130 interrupted by Ctrl-C, 141 standard output closed by its
reader (``check --list | head -1``, as SIGPIPE would). Errors are one line on standard
error, ``wsfanout <command>: error: ...``, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from .. import __version__
from .._core.errors import ConfigError, PolicyError
from .._core.notices import NOTICE_FORMATS
from .._core.policy import Policy
from .._core.rules import Overflow, resolve_rules
from .._files.policy_files import (
    STAGE_KINDS,
    PolicyFile,
    parameters,
    parse_policy_file,
    read_text,
    read_toml,
)
from .._files.presets import load_policy_file, looks_like_path, presets
from .._files.routes import Route, Routes, is_routing_document, load_routes
from .._files.units import format_size, parse_duration, parse_size

__all__ = ["main"]


class CommandError(Exception):
    """An error to report in one line and exit 1."""


# -- argument types: each refuses a wrong value rather than switching a limit off -----


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks one)")
    return value


def _seconds(*, allow_zero: bool) -> Callable[[str], float]:
    def read(text: str) -> float:
        try:
            value = parse_duration(text if text[-1:].isalpha() else float(text))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f'{text!r} is not a duration (expected e.g. "250ms", "5s" or 5)'
            ) from None
        if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'>= 0' if allow_zero else '> 0'}")
        return value

    return read


def _bytes(text: str) -> int:
    try:
        value = parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a size (expected e.g. 4096, "4KiB", "1MiB")'
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1 byte")
    return value


def _redis_url(text: str) -> str:
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Redis URL (expected redis://HOST[:PORT][/DB], "
            "rediss://... for TLS, or unix://PATH)"
        )
    try:
        from redis.connection import parse_url
    except ImportError:  # pragma: no cover - reported as an error once parsing is done
        return text
    try:
        parse_url(text)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Redis URL: {exc}") from None
    return text


_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s?#]+$")


def _origin(text: str) -> str | None:
    if text == "none":
        return None
    if text == "null" or _ORIGIN.match(text):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not an origin (expected scheme://host[:port], e.g. https://example.com, "
        'or "none" to admit clients that send no Origin)'
    )


# -- the parser ----------------------------------------------------------------------

SERVE_EPILOG = """\
examples:
  tail -F app.log | wsfanout serve --policy log-tail
  printf 'a\\nb\\n' | wsfanout serve --policy chat --wait-clients 1 --exit-on-eof
  WSFANOUT_TOKEN="$(cat token.txt)" wsfanout serve --policy market-data \\
      --key-field symbol --host 0.0.0.0 --token-env WSFANOUT_TOKEN \\
      --origin https://app.example.com
  app-events | wsfanout serve --policy chat --redis redis://127.0.0.1:6379/0 \\
      --workers 4 --input-channel alerts

It prints one line on standard output once it listens ("wsfanout: listening on
ws://127.0.0.1:8765 (...)") and a line per client on standard error. SIGINT or
SIGTERM closes every client with 1001 (exit 130 and 0); --exit-on-eof closes with 1000
after delivering what is queued (exit 0).

With --redis, the server shares a Redis backplane: what it publishes reaches every
server on that Redis, and theirs reach its clients. With --workers N (N >= 2), N
processes serve the port and this one publishes standard input to them through Redis.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsfanout",
        description="WebSocket broadcasting with per-client queues and slow-client policies.",
    )
    parser.add_argument("--version", action="version", version=f"wsfanout {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="relay standard input, one message per line, to WebSocket clients",
        description="Relay standard input, one message per line, to every WebSocket client,\n"
        "each under its policy.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = serve.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--policy", metavar="NAME|FILE", help="a preset name (see check --list) or a policy file"
    )
    which.add_argument(
        "--routes", metavar="FILE", help="a routing file: a policy per kind of subscriber"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=_port, default=8765, help="port to listen on, 0 for any (default: 8765)"
    )
    serve.add_argument(
        "--origin",
        dest="origins",
        action="append",
        type=_origin,
        metavar="ORIGIN",
        help="admit only browsers from this origin (repeatable); "
        '"none" also admits clients that send no Origin header',
    )
    serve.add_argument(
        "--token-env",
        metavar="VAR",
        help="require the token held in this environment variable, as "
        '"Authorization: Bearer TOKEN" or "?token=TOKEN"',
    )
    serve.add_argument(
        "--max-clients", type=_positive_int, metavar="N", help="refuse clients past N with 503"
    )
    serve.add_argument(
        "--max-handshakes",
        type=_positive_int,
        metavar="N",
        help="opening handshakes under way at once; past N the oldest is cut "
        "(default: a quarter of the descriptor limit, at least 16)",
    )
    serve.add_argument(
        "--handshake-timeout",
        type=_seconds(allow_zero=False),
        default=3.0,
        metavar="DURATION",
        help="how long a client gets to finish its opening handshake (default: 3s)",
    )
    serve.add_argument(
        "--max-size",
        type=_bytes,
        default=4096,
        metavar="BYTES",
        help="largest message a client may send (default: 4KiB)",
    )
    serve.add_argument(
        "--key-field",
        metavar="NAME",
        help="for JSON object lines, use this field as the key for conflate-by-key",
    )
    serve.add_argument(
        "--wait-clients",
        type=_positive_int,
        default=0,
        metavar="N",
        help="read standard input only once N clients are connected",
    )
    serve.add_argument(
        "--exit-on-eof",
        action="store_true",
        help="at the end of input, deliver what is queued, close with 1000 and exit",
    )
    serve.add_argument(
        "--drain-timeout",
        type=_seconds(allow_zero=True),
        default=5.0,
        metavar="DURATION",
        help="with --exit-on-eof, how long to wait for queues to empty (default: 5s)",
    )
    serve.add_argument(
        "--close-timeout",
        type=_seconds(allow_zero=False),
        default=2.0,
        metavar="DURATION",
        help="how long a client gets to finish closing before it is cut (default: 2s)",
    )
    serve.add_argument(
        "-q", "--quiet", action="store_true", help="no line per client on standard error"
    )
    scale = serve.add_argument_group("scaling out with Redis")
    scale.add_argument(
        "--redis",
        type=_redis_url,
        metavar="URL",
        help="share a Redis backplane (redis://HOST[:PORT][/DB]) with every server on it",
    )
    scale.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="serve the port with N processes (needs --redis; default: 1, this process)",
    )
    scale.add_argument(
        "--input-channel",
        dest="input_channels",
        action="append",
        metavar="NAME",
        help="also publish every message of this Redis channel (repeatable; needs --redis)",
    )
    serve.set_defaults(run=_serve, parser=serve)

    demo = commands.add_parser(
        "demo",
        help="watch a crowd of fast, slow, stalled and flapping clients, each under a preset",
        description="Run an embedded server, a publisher and a crowd of simulated clients "
        "of several speeds, each under a preset; show a live table and a summary.",
    )
    demo.add_argument(
        "--duration",
        type=_seconds(allow_zero=False),
        default=20.0,
        metavar="DURATION",
        help="how long to publish (default: 20s)",
    )
    demo.add_argument(
        "--clients", type=_positive_int, default=12, metavar="N", help="crowd size (default: 12)"
    )
    demo.add_argument(
        "--rate",
        type=_positive_int,
        default=200,
        metavar="N",
        help="messages published per second (default: 200)",
    )
    demo.add_argument("--plain", action="store_true", help="plain text, even if rich is installed")
    demo.set_defaults(run=_demo, parser=demo)

    check = commands.add_parser(
        "check",
        help="validate policy and routing files and show what they resolve to",
        description="Validate policy files, routing files and preset names; print each "
        "resolved policy, its queue bound and the guarantees it declares.",
    )
    check.add_argument("files", nargs="*", metavar="FILE", help="policy or routing files")
    check.add_argument("--list", action="store_true", help="list the presets and the stage kinds")
    check.set_defaults(run=_check, parser=check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    run: Callable[[argparse.Namespace, argparse.ArgumentParser], int] = args.run
    subparser: argparse.ArgumentParser = args.parser
    try:
        return run(args, subparser)
    except PolicyError as exc:  # a bad policy or routing file, a preset that is not one
        print(f"{subparser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except (CommandError, ConfigError) as exc:
        print(f"{subparser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return stdout_closed()


def stdout_closed() -> int:
    """Standard output's reader left (``| head -1``): exit quietly, as SIGPIPE would.

    Standard output is pointed at /dev/null first, so that the interpreter's own flush
    at exit does not fail again and print a traceback.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


# -- serve ---------------------------------------------------------------------------


def _serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .serve import ServeError, ServeOptions, run_server

    token = None
    if args.token_env is not None:
        token = os.environ.get(args.token_env)
        if token is None:
            parser.error(f"--token-env {args.token_env}: that environment variable is not set")
        # Whitespace around it (a token file's newline) is never part of a token.
        token = token.strip()
        if not token:
            parser.error(f"--token-env {args.token_env}: that environment variable is empty")
    if not args.host:
        parser.error(
            "--host: expected an address, not an empty string (0.0.0.0 means every interface)"
        )
    if args.key_field is not None and not args.key_field:
        parser.error("--key-field: expected a field name, not an empty string")
    workers, channels = _check_scaling(args, parser)
    if args.routes is not None:
        routes = load_routes(args.routes)
        describe = f"routes {args.routes}"
    else:
        loaded = load_policy_file(args.policy)
        routes = Routes((), Route(policy=loaded.policy, policy_name=args.policy))
        describe = f"policy {args.policy}"
    options = ServeOptions(
        routes=routes,
        describe=describe,
        host=args.host,
        port=args.port,
        origins=None if args.origins is None else tuple(args.origins),
        token=token,
        max_clients=args.max_clients,
        max_handshakes=args.max_handshakes,
        handshake_timeout=args.handshake_timeout,
        max_size=args.max_size,
        exit_on_eof=args.exit_on_eof,
        wait_clients=args.wait_clients,
        key_field=args.key_field,
        close_timeout=args.close_timeout,
        drain_timeout=args.drain_timeout,
        quiet=args.quiet,
        redis=args.redis,
        workers=workers,
        input_channels=channels,
    )
    stdin = _stdin_fd()
    try:
        return asyncio.run(run_server(options, stdin, sys.stdout, sys.stderr))
    except ServeError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        # asyncio rewords a failed bind ("error while attempting to bind on address
        # ('127.0.0.1', 8765): address already in use"); the errno says it plainly.
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {why}") from None


def _stdin_fd() -> int:
    """Standard input's file descriptor, or -1 if it has none (serve then logs that it
    cannot read standard input, and takes it as the end of input)."""
    try:
        return sys.stdin.fileno() if sys.stdin is not None else -1
    except (OSError, ValueError):  # replaced by an object without one (io), or closed
        return -1


def _check_scaling(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[int, tuple[str, ...]]:
    """The worker count and input channels, once the flags agree with each other."""
    from .serve import NAMESPACE

    channels = tuple(dict.fromkeys(args.input_channels or ()))
    if args.redis is None:
        if args.workers is not None:
            parser.error("--workers needs --redis URL: worker processes share messages through it")
        if channels:
            parser.error("--input-channel needs --redis URL")
        return 1, ()
    if importlib.util.find_spec("redis") is None:
        raise CommandError("--redis needs redis-py: pip install 'wsfanout[redis]'")
    workers = args.workers or 1
    if workers > 1:
        for flag, given in (
            ("--exit-on-eof", args.exit_on_eof),
            ("--wait-clients", args.wait_clients),
        ):
            if given:
                parser.error(
                    f"{flag} needs a single process, not --workers {workers}: the process "
                    "reading standard input has no clients of its own"
                )
    for name in channels:
        if not name:
            parser.error("--input-channel: expected a channel name, not an empty string")
        if name.startswith(f"{NAMESPACE}:"):
            parser.error(
                f"--input-channel {name}: the backplane's own channels ({NAMESPACE}:*) "
                "already reach every client; name another channel"
            )
    return workers, channels


# -- demo ----------------------------------------------------------------------------


def _demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .demo import run_demo

    return run_demo(duration=args.duration, clients=args.clients, rate=args.rate, plain=args.plain)


# -- check ---------------------------------------------------------------------------

_OVERFLOW = {
    Overflow.DROP_OLDEST: "drop the oldest",
    Overflow.DROP_NEWEST: "drop the newest",
    Overflow.CLOSE: "close the subscriber (1013)",
}


def _size_text(size: int) -> str:
    written = format_size(size)
    return written if isinstance(written, str) else f"{size} bytes"


def describe_policy(policy: Policy) -> list[str]:
    """What ``check`` prints about a policy: its code, its queue bound and its guarantees."""
    rules = resolve_rules(policy)
    lines = [
        f"policy:     {policy!r}",
        f"bound:      {rules.max_messages} messages or {_size_text(rules.max_bytes or 0)} "
        f"queued; when full: {_OVERFLOW[rules.overflow or Overflow.CLOSE]}",
    ]
    if rules.arrival is not None:
        lines.append(f"arrival:    {rules.arrival.value}")
    if rules.batch is not None:
        limit = "" if rules.batch.max_bytes is None else f" or {_size_text(rules.batch.max_bytes)}"
        lines.append(f"batch:      up to {rules.batch.max_messages} messages{limit} per frame")
    if rules.notify is not None:
        names = [name for name, fmt in NOTICE_FORMATS.items() if fmt is rules.notify]
        shown = names[0] if names else getattr(rules.notify, "__qualname__", repr(rules.notify))
        lines.append(f"notices:    every loss announced before the next message ({shown})")
    guarantees: Any = getattr(policy, "guarantees", None)
    if callable(guarantees):
        guarantees = guarantees()
    if guarantees is not None:
        items = [guarantees] if isinstance(guarantees, str) else list(guarantees)
        for n, item in enumerate(items):
            lines.append(f"{'guarantees:' if n == 0 else '':<12}{item}")
    return lines


def _check_one(argument: str, out: IO[str]) -> None:
    path = Path(argument)
    if not looks_like_path(argument) and not path.is_file():
        preset = load_policy_file(argument)
        _print_policy_file(f"{argument} (preset)", preset, out)
        return
    text = read_text(argument)
    if is_routing_document(read_toml(text, argument)):
        routes = load_routes(path)
        print(f"{argument}: ok (routing file)", file=out)
        for n, route in enumerate((*routes.routes, routes.default)):
            where = f"route[{n}]" if route is not routes.default else "default"
            print(f"  {where}: {route.describe()} -> {route.policy_name}", file=out)
            for line in describe_policy(route.policy):
                print(f"    {line}", file=out)
        return
    _print_policy_file(argument, parse_policy_file(text, filename=argument), out)


def _print_policy_file(title: str, loaded: PolicyFile, out: IO[str]) -> None:
    print(f"{title}: ok", file=out)
    if loaded.description:
        for line in textwrap.wrap(loaded.description, 76):
            print(f"  {line}", file=out)
    for line in describe_policy(loaded.policy):
        print(f"  {line}", file=out)


def _list(out: IO[str]) -> None:
    print("Presets (--policy NAME, load_policy(NAME)):", file=out)
    for name, preset in presets().items():
        print(f"  {name}", file=out)
        print(f"      {preset.policy!r}", file=out)
        for line in textwrap.wrap(preset.description, 72):
            print(f"      {line}", file=out)
    print("\nStage kinds ([[stage]] kind = ...):", file=out)
    for kind, cls in STAGE_KINDS.items():
        keys = ", ".join(parameters(kind)) or "no parameters"
        summary = (cls.__doc__ or "").strip().splitlines()[0].replace("``", "")
        print(f"  {kind:<16}{cls.__name__}: {keys}", file=out)
        print(f"  {'':<16}{summary}", file=out)


def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.files and not args.list:
        parser.error("expected FILE... or --list")
    out = sys.stdout
    if args.list:
        _list(out)
    failed = 0
    for argument in args.files:
        try:
            _check_one(argument, out)
        except PolicyError as exc:
            failed += 1
            print(f"{parser.prog}: error: {exc}", file=sys.stderr)
    if out is not None:  # None: standard output closed (>&-); print() wrote nothing
        out.flush()
    return 2 if failed else 0
