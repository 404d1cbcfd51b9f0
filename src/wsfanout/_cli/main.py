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
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from .. import __version__
from .._core.acks import MIN_WINDOW, WINDOW
from .._core.adaptive import RATIO, Adaptive
from .._core.builtins import REDUCERS
from .._core.errors import ConfigError, PolicyError, PolicyFileError
from .._core.ladder import Escalate, Ladder
from .._core.notices import NOTICE_FORMATS
from .._core.policy import Policy
from .._core.rules import Overflow, Rules, resolve_rules
from .._files.conditions import format_condition
from .._files.policy_files import (
    STAGE_KINDS,
    PolicyFile,
    parameters,
    parse_policy_file,
    read_text,
    read_toml,
)
from .._files.presets import load_policy_file, looks_like_path, presets
from .._files.routes import is_routing_document, load_routes
from .._files.units import format_duration, format_size, parse_duration
from .admin import add_admin_argument
from .configure import CommandError, build_options, print_configuration
from .options import (
    ENV_PREFIX,
    SERVE_OPTIONS,
    UsageError,
    add_arguments,
    is_config_document,
    parse_config,
    read_config,
    resolve,
)

__all__ = ["main"]


# -- argument types: each refuses a wrong value rather than switching a limit off -----


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
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


# -- the parser ----------------------------------------------------------------------

SERVE_EPILOG = """\
examples:
  tail -F app.log | wsfanout serve
  printf 'a\\nb\\n' | wsfanout serve --policy chat --wait-clients 1 --exit-on-eof
  price-feed | wsfanout serve --policy market-data --topic-field symbol --key-field symbol
  WSFANOUT_TOKEN="$(cat token.txt)" wsfanout serve --config /etc/wsfanout.toml \\
      --host 0.0.0.0 --token-env WSFANOUT_TOKEN --tls-cert cert.pem --tls-key key.pem
  app-events | wsfanout serve --redis redis://127.0.0.1:6379/0 --workers 4 \\
      --input-channel alerts --http-publish

It prints one line on standard output once it listens ("wsfanout: listening on
ws://127.0.0.1:8765 (policy default, compression shared)") and a line per client on
standard error. SIGINT or SIGTERM closes every client with 1001 (exit 130 and 0);
--exit-on-eof closes with 1000 after delivering what is queued (exit 0).

A client chooses its topics with ?topic=NAME (repeatable); without one it receives
every message. Every option is also a key of the configuration file (--config FILE,
or WSFANOUT_CONFIG) and an environment variable (WSFANOUT_ and the key in capitals,
e.g. WSFANOUT_MAX_CLIENTS); a flag beats a variable, which beats the file, which
beats the default. wsfanout check FILE validates a configuration file.

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
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="read options from this TOML file (default: $WSFANOUT_CONFIG, if set)",
    )
    add_arguments(serve, SERVE_OPTIONS)
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
    add_admin_argument(demo, " (default: 127.0.0.1, any free port)")
    demo.set_defaults(run=_demo, parser=demo)

    check = commands.add_parser(
        "check",
        help="validate policy, routing and configuration files and show what they resolve to",
        description="Validate policy files, routing files, configuration files and preset "
        "names; print each resolved policy, its queue bound and the guarantees it declares, "
        "and what a configuration file sets.",
    )
    check.add_argument(
        "files", nargs="*", metavar="FILE", help="policy, routing or configuration files"
    )
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
    from .listen import ListenError
    from .serve import ServeError, run_server

    environ = os.environ
    try:
        config = None
        path = args.config or environ.get(ENV_PREFIX + "CONFIG")
        if path is not None:
            config = read_config(path)
        settings = resolve(args, environ, config)
        options = build_options(settings, environ)
    except UsageError as exc:
        parser.error(str(exc))
    stdin = _stdin_fd()
    try:
        return asyncio.run(run_server(options, stdin, sys.stdout, sys.stderr))
    except (ServeError, ListenError) as exc:
        raise CommandError(str(exc)) from None


def _stdin_fd() -> int:
    """Standard input's file descriptor, or -1 if it has none (serve then logs that it
    cannot read standard input, and takes it as the end of input)."""
    try:
        return sys.stdin.fileno() if sys.stdin is not None else -1
    except (OSError, ValueError):  # replaced by an object without one (io), or closed
        return -1


# -- demo ----------------------------------------------------------------------------


def _demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .demo import run_demo

    return run_demo(
        duration=args.duration,
        clients=args.clients,
        rate=args.rate,
        plain=args.plain,
        admin=args.admin or ("127.0.0.1", 0),
    )


# -- check ---------------------------------------------------------------------------

_OVERFLOW = {
    Overflow.DROP_OLDEST: "drop the oldest",
    Overflow.DROP_NEWEST: "drop the newest",
    Overflow.CLOSE: "close the subscriber (1013)",
}


def _size_text(size: int) -> str:
    written = format_size(size)
    return written if isinstance(written, str) else f"{size} bytes"


def _bound_text(rules: Rules) -> str:
    return (
        f"{rules.max_messages} messages or {_size_text(rules.max_bytes or 0)} "
        f"queued; when full: {_OVERFLOW[rules.overflow or Overflow.CLOSE]}"
    )


def _rules_lines(rules: Rules) -> list[str]:
    lines = []
    if rules.arrival is not None:
        reduce = rules.reduce
        merge = "" if reduce is None else f", merged by {_reducer_name(reduce)}"
        lines.append(f"arrival:    {rules.arrival.value}{merge}")
    if rules.batch is not None:
        limit = "" if rules.batch.max_bytes is None else f" or {_size_text(rules.batch.max_bytes)}"
        lines.append(f"batch:      up to {rules.batch.max_messages} messages{limit} per frame")
    if rules.notify is not None:
        names = [name for name, fmt in NOTICE_FORMATS.items() if fmt is rules.notify]
        shown = names[0] if names else getattr(rules.notify, "__qualname__", repr(rules.notify))
        lines.append(f"notices:    every loss announced before the next message ({shown})")
    return lines


def _reducer_name(reduce: object) -> str:
    for name, function in REDUCERS.items():
        if function is reduce:
            return name
    return str(getattr(reduce, "__qualname__", repr(reduce)))


def _duration_text(seconds: float) -> str:
    written = format_duration(seconds)
    return written if isinstance(written, str) else f"{seconds}s"


def _ladder_lines(policy: Policy) -> list[str]:
    """The levels of the ladder in ``policy``, one or two lines each."""
    ladder = next((s for s in policy.stages if isinstance(s, Ladder)), None)
    if ladder is None:
        return []
    levels = policy.level_policies()
    told = "announced to the client" if ladder.announce else "not announced"
    lines = [
        f"ladder:     {len(levels)} levels, at most one step per "
        f"{_duration_text(ladder.hold)}; steps {told}"
    ]
    names = ladder.level_names()
    if isinstance(ladder, Adaptive):
        paces = ladder.paces
        lines.append(
            f"  level 0 ({names[0]}): everything at once, in frames of up to "
            f"{_size_text(ladder.max_bytes)}"
        )
        lines.append(
            f"  levels 1-{len(paces)}: a frame every {_duration_text(ladder.interval)}, paced "
            f"from {names[1]} down to {names[-1]} (each {100 * (1 - 1 / RATIO):.0f}% slower)"
        )
        lines.append(
            f"    at the pace nearest {ladder.fraction:g} x the drain rate; frames of at least "
            f"{_size_text(ladder.min_bytes)}, less often below {names[1 + _floor(ladder)]}"
        )
        if ladder.probe is not None:
            lines.append(
                f"  after {_duration_text(ladder.probe)} without a new drain rate: a faster pace"
            )
        lines.append("  a wsfanout.v1 client is asked to acknowledge; once it does, paced from")
        lines.append(
            f"    what it takes, frames held while more than {_duration_text(WINDOW)} of that "
            f"({_size_text(MIN_WINDOW)} at least) is untaken"
        )
        return lines
    assert isinstance(ladder, Escalate)
    for number, (level, composed) in enumerate(zip(ladder.levels, levels, strict=True)):
        when = []
        if level.up is not None:
            when.append(f"up when {format_condition(level.up)}")
        if level.down is not None:
            when.append(f"down when {format_condition(level.down)}")
        suffix = f" ({'; '.join(when)})" if when else ""
        lines.append(f"  level {number} {names[number]}{suffix}:")
        lines.append(f"    {composed!r}")
        lines.append(f"    bound: {_bound_text(resolve_rules(composed))}")
    return lines


def _floor(ladder: Adaptive) -> int:
    """The last level whose frames are a full interval's worth (above ``min_bytes``)."""
    paces = ladder.paces
    return max(
        (i for i, pace in enumerate(paces) if pace * ladder.interval >= ladder.min_bytes),
        default=0,
    )


def describe_policy(policy: Policy) -> list[str]:
    """What ``check`` prints about a policy: its code, its queue bound (for a ladder, at
    its first level, then each level's), and its guarantees."""
    rules = resolve_rules(policy)
    lines = [
        f"policy:     {policy!r}",
        f"bound:      {_bound_text(rules)}",
    ]
    lines += _rules_lines(rules)
    lines += _ladder_lines(policy)
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
    document = read_toml(text, argument)
    if is_config_document(document):
        config = parse_config(text, filename=argument, base=path.parent)
        settings = resolve({}, {}, config)
        try:
            options = build_options(settings, None)
        except UsageError as exc:  # only the file gives options here: it is the file's
            raise PolicyFileError(f"{argument}: {exc}", filename=argument) from None
        print(f"{argument}: ok (configuration file)", file=out)
        print_configuration(settings, options, describe_policy, out)
        return
    if is_routing_document(document):
        routes = load_routes(path)
        print(f"{argument}: ok (routing file)", file=out)
        for n, route in enumerate((*routes.routes, routes.default)):
            where = f"route[{n}]" if route is not routes.default else "default"
            topics = "" if route.topics is None else f", topics {', '.join(route.topics)}"
            print(f"  {where}: {route.describe()} -> {route.policy_name}{topics}", file=out)
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
        except (PolicyError, CommandError) as exc:
            failed += 1
            print(f"{parser.prog}: error: {exc}", file=sys.stderr)
    if out is not None:  # None: standard output closed (>&-); print() wrote nothing
        out.flush()
    return 2 if failed else 0
