"""The options of ``wsfanout serve`` in one table, and where their values come from.

Theory of operation
-------------------
:data:`SERVE_OPTIONS` declares every option once: its key in a configuration file
(``max_clients``), its flag (``--max-clients``), its environment variable
(``WSFANOUT_MAX_CLIENTS``), its :class:`Kind` (how a value is read from text and from
TOML, and checked), its default and its help. The flags, the environment and the
configuration file are all read through the table, so a row added to it is an option
in all three, in ``--help``, in ``wsfanout check`` and in the documentation test.

Values are layered, strongest first: a flag, then an environment variable, then the
configuration file, then the default. Options of one ``exclusive`` group (``policy``
and ``routes``) replace each other: the one from the strongest source wins, and two
of them from one source are an error. A wrong value is reported where it was given:
argparse's usage error for a flag, ``WSFANOUT_PORT='x' ...`` for a variable, and
``FILE: port: ...`` (a :class:`PolicyFileError`, as for policy files) for the file.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import attrs

from .._core.errors import PolicyFileError
from .._files.policy_files import read_text, read_toml, unknown_key
from .._files.presets import looks_like_path
from .._files.units import format_duration, format_size, parse_duration, parse_size, show_toml
from .logs import DROP_INTERVAL, FORMATS, LEVELS

__all__ = [
    "ENV_PREFIX",
    "SERVE_OPTIONS",
    "Invalid",
    "Kind",
    "Option",
    "Settings",
    "Source",
    "UsageError",
    "add_arguments",
    "option",
    "read_config",
    "resolve",
]

ENV_PREFIX = "WSFANOUT_"


class Invalid(ValueError):
    """A value of the wrong kind; the message is the constraint (``must be >= 1``)."""


class UsageError(Exception):
    """Options that disagree, or a value given wrong outside a file: exit 2."""


# -- kinds: how a value is read from text (flags, variables) and from TOML -------------


def _same(value: Any) -> object:
    return value


@attrs.frozen
class Kind:
    """How one kind of option value is read and checked, and written back for ``check``.

    ``from_text`` reads a flag's or a variable's text, ``from_toml`` a configuration
    file's value; both raise :class:`Invalid` with the constraint. ``path`` kinds are
    relative to the configuration file's folder when they come from one.
    """

    from_text: Callable[[str], object]
    from_toml: Callable[[object], object]
    to_toml: Callable[[Any], object] = _same
    path: Callable[[str], bool] = lambda value: False
    """Whether a value names a file, found relative to the configuration file's folder."""


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"is not {what}")
    return value


def _int_text(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise Invalid(f"is not {what}") from None


def _positive(value: int) -> int:
    if value < 1:
        raise Invalid("must be >= 1")
    return value


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise Invalid("is not a port number (0-65535; 0 picks one)")
    return value


COUNT = Kind(
    lambda text: _positive(_int_text(text, "an integer")),
    lambda value: _positive(_integer(value, "an integer")),
)
PORT = Kind(
    lambda text: _port(_int_text(text, "a port number")),
    lambda value: _port(_integer(value, "a port number")),
)
"""0 to 65535; 0 lets the system pick a free port."""


def _size(value: object) -> int:
    try:
        size = parse_size(value)
    except ValueError:
        raise Invalid('is not a size (expected e.g. 4096, "4KiB", "1MiB")') from None
    if size < 1:
        raise Invalid("must be >= 1 byte")
    return size


SIZE = Kind(_size, _size, format_size)


def _seconds(allow_zero: bool) -> Kind:
    def read(value: object) -> float:
        text_number = isinstance(value, str) and not value[-1:].isalpha()
        try:
            seconds = parse_duration(float(value) if text_number else value)  # type: ignore[arg-type]
        except ValueError:
            raise Invalid('is not a duration (expected e.g. "250ms", "5s" or 5)') from None
        if not (seconds >= 0 if allow_zero else seconds > 0) or seconds == float("inf"):
            raise Invalid(f"must be {'>= 0' if allow_zero else '> 0'}")
        return seconds

    return Kind(read, read, format_duration)


SECONDS = _seconds(allow_zero=False)
SECONDS_OR_ZERO = _seconds(allow_zero=True)


def _text(what: str, hint: str = "") -> Kind:
    """A non-empty string; an empty one is refused, never taken as "off"."""

    def read(value: object) -> str:
        if not isinstance(value, str):
            raise Invalid(f"is not a string (expected {what})")
        if not value:
            raise Invalid(f"is empty (expected {what}{hint})")
        return value

    return Kind(read, read)


def _path(what: str, is_path: Callable[[str], bool] = lambda value: True) -> Kind:
    base = _text(what)
    return Kind(base.from_text, base.from_toml, path=is_path)


def _boolean_text(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise Invalid("is not a boolean (expected true or false, 1 or 0, yes or no, on or off)")


def _boolean_toml(value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid("is not a boolean (expected true or false)")
    return value


BOOLEAN = Kind(_boolean_text, _boolean_toml)


def _choice(*choices: str) -> Kind:
    def read(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise Invalid(f"is not one of {', '.join(choices)}")
        return value

    return Kind(read, read)


_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s?#]+$")


def _origin(value: object) -> str | None:
    if value == "none":
        return None
    if isinstance(value, str) and (value == "null" or _ORIGIN.match(value)):
        return value
    raise Invalid(
        "is not an origin (expected scheme://host[:port], e.g. https://example.com, "
        'or "none" to admit clients that send no Origin)'
    )


ORIGIN = Kind(_origin, _origin, lambda value: "none" if value is None else value)


def _redis_url(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise Invalid(
            "is not a Redis URL (expected redis://HOST[:PORT][/DB], "
            "rediss://... for TLS, or unix://PATH)"
        )
    try:
        from redis.connection import parse_url
    except ImportError:  # pragma: no cover - reported once the options are resolved
        return value
    try:
        parse_url(value)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise Invalid(f"is not a Redis URL: {exc}") from None
    return value


REDIS_URL = Kind(_redis_url, _redis_url)


def _address(value: object) -> tuple[str, int]:
    from .admin import split_address

    if not isinstance(value, str):
        raise Invalid("is not HOST:PORT (a string, e.g. 127.0.0.1:9000)")
    try:
        return split_address(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _show_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


ADDRESS = Kind(_address, _address, _show_address)
"""``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``PORT`` (on 127.0.0.1)."""


# -- the table -----------------------------------------------------------------------


@attrs.frozen
class Option:
    """One option of ``serve``: its key, flag, variable, kind, default and help.

    ``repeatable`` options hold a tuple: a flag given several times, a TOML array (or
    one string), a variable's comma-separated items. ``exclusive`` names the group of
    options that replace each other.
    """

    key: str
    kind: Kind
    help: str
    default: object = None
    metavar: str | None = None
    group: str = "serving"
    repeatable: bool = False
    exclusive: str | None = None
    flag: str = ""
    short: str | None = None

    @property
    def flags(self) -> tuple[str, ...]:
        long = self.flag or "--" + self.key.replace("_", "-")
        return (long,) if self.short is None else (self.short, long)

    @property
    def long_flag(self) -> str:
        return self.flags[-1]

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


POLICY = "policy: who gets which policy (default: the default policy)"
LISTEN = "listening"
ADMISSION = "who may subscribe"
MESSAGES = "messages: topics, keys and the end of input"
PUBLISHING = "publishing over HTTP: POST /publish"
SCALING = "scaling out with Redis"
HISTORY = "history and resuming (docs/how-to/resume.md)"
OPERATING = "operating: logs (standard error) and the admin listener"

SERVE_OPTIONS: tuple[Option, ...] = (
    Option(
        "policy",
        _path("a preset name or a policy file", looks_like_path),
        "a preset name (see check --list) or a policy file",
        metavar="NAME|FILE",
        group=POLICY,
        exclusive="policy",
    ),
    Option(
        "routes",
        _path("a routing file"),
        "a routing file: a policy (and topics) per kind of subscriber",
        metavar="FILE",
        group=POLICY,
        exclusive="policy",
    ),
    Option(
        "host",
        _text("an address", "; 0.0.0.0 means every interface"),
        "interface to listen on",
        default="127.0.0.1",
        group=LISTEN,
    ),
    Option("port", PORT, "port to listen on, 0 for any", default=8765, group=LISTEN),
    Option(
        "unix",
        _path("a socket path"),
        "listen on this Unix socket instead of a host and port",
        metavar="PATH",
        group=LISTEN,
    ),
    Option(
        "tls_cert",
        _path("a certificate file"),
        "serve wss:// with this PEM certificate chain (needs --tls-key)",
        metavar="FILE",
        group=LISTEN,
    ),
    Option(
        "tls_key",
        _path("a private key file"),
        "the PEM private key of --tls-cert (not encrypted)",
        metavar="FILE",
        group=LISTEN,
    ),
    Option(
        "compression",
        _choice("shared", "per-connection", "off"),
        "permessage-deflate: shared compresses each message once for every client "
        "(server_no_context_takeover); per-connection is websockets' default (a "
        "compressor per client: better ratio, far more CPU and memory); off",
        default="shared",
        metavar="MODE",
        group=LISTEN,
    ),
    Option(
        "origins",
        ORIGIN,
        "admit only browsers from this origin (repeatable); "
        '"none" also admits clients that send no Origin header',
        metavar="ORIGIN",
        group=ADMISSION,
        repeatable=True,
        flag="--origin",
    ),
    Option(
        "token_env",
        _text("an environment variable's name"),
        "require the token held in this environment variable, as "
        '"Authorization: Bearer TOKEN" or "?token=TOKEN"',
        metavar="VAR",
        group=ADMISSION,
    ),
    Option("max_clients", COUNT, "refuse clients past N with 503", metavar="N", group=ADMISSION),
    Option(
        "max_handshakes",
        COUNT,
        "opening handshakes under way at once; past N the oldest is cut "
        "(default: a quarter of the descriptor limit, at least 16)",
        metavar="N",
        group=ADMISSION,
    ),
    Option(
        "handshake_timeout",
        SECONDS,
        "how long a client gets to finish its opening handshake",
        default=3.0,
        metavar="DURATION",
        group=ADMISSION,
    ),
    Option(
        "max_size",
        SIZE,
        "largest message a client may send; more closes it with 1009",
        default=4096,
        metavar="BYTES",
        group=ADMISSION,
    ),
    Option(
        "topic_field",
        _text("a field name"),
        "for JSON object lines, publish on the topic this field names",
        metavar="NAME",
        group=MESSAGES,
    ),
    Option(
        "key_field",
        _text("a field name"),
        "for JSON object lines, use this field as the key for conflate-by-key",
        metavar="NAME",
        group=MESSAGES,
    ),
    Option(
        "wait_clients",
        COUNT,
        "read standard input only once N clients are connected",
        metavar="N",
        group=MESSAGES,
    ),
    Option(
        "exit_on_eof",
        BOOLEAN,
        "at the end of input, deliver what is queued, close with 1000 and exit",
        default=False,
        group=MESSAGES,
    ),
    Option(
        "drain_timeout",
        SECONDS_OR_ZERO,
        "with --exit-on-eof, how long to wait for queues to empty",
        default=5.0,
        metavar="DURATION",
        group=MESSAGES,
    ),
    Option(
        "http_publish",
        BOOLEAN,
        "accept messages by POST /publish on the same port (the body is the message)",
        default=False,
        group=PUBLISHING,
    ),
    Option(
        "publish_token_env",
        _text("an environment variable's name"),
        "publishers must present the token held in this variable (default: the "
        "subscribers' --token-env, if any); implies --http-publish",
        metavar="VAR",
        group=PUBLISHING,
    ),
    Option(
        "publish_max_size",
        SIZE,
        "largest message POST /publish accepts (413 beyond)",
        default=1024 * 1024,
        metavar="BYTES",
        group=PUBLISHING,
    ),
    Option(
        "close_timeout",
        SECONDS,
        "how long a client gets to finish closing before it is cut",
        default=2.0,
        metavar="DURATION",
    ),
    Option(
        "quiet",
        BOOLEAN,
        "no line per client on standard error",
        default=False,
        short="-q",
    ),
    Option(
        "log_level",
        _choice(*LEVELS),
        "debug, info (a line per client: the default), notice (what -q shows), warning or error",
        metavar="LEVEL",
        group=OPERATING,
    ),
    Option(
        "log_format",
        _choice(*FORMATS),
        "text (lines for people) or json (one object per line)",
        default="text",
        metavar="FORMAT",
        group=OPERATING,
    ),
    Option(
        "log_drops_every",
        SECONDS,
        "summarise each client's dropped messages at most once per DURATION",
        default=DROP_INTERVAL,
        metavar="DURATION",
        group=OPERATING,
    ),
    Option(
        "admin",
        ADDRESS,
        "serve /metrics, /healthz, /clients and a live status page at / on this "
        "address (PORT alone: 127.0.0.1:PORT); off by default",
        metavar="HOST:PORT",
        group=OPERATING,
    ),
    Option(
        "history",
        COUNT,
        "keep the last N messages of each topic for clients that resume with "
        "?since=TOPIC:EPOCH:OFFSET (in Redis with --redis; default: keep none)",
        metavar="N",
        group=HISTORY,
    ),
    Option(
        "history_bytes",
        SIZE,
        "with --history, keep at most this much payload per topic",
        metavar="BYTES",
        group=HISTORY,
    ),
    Option(
        "history_age",
        SECONDS,
        "with --history, keep no message older than this",
        metavar="DURATION",
        group=HISTORY,
    ),
    Option(
        "heartbeat",
        SECONDS_OR_ZERO,
        "tell a wsfanout.v1 client that received nothing for this long where its "
        "topics stand, 0 for never",
        default=15.0,
        metavar="DURATION",
        group=HISTORY,
    ),
    Option(
        "redis",
        REDIS_URL,
        "share a Redis backplane (redis://HOST[:PORT][/DB]) with every server on it",
        metavar="URL",
        group=SCALING,
    ),
    Option(
        "workers",
        COUNT,
        "serve the port with N processes (needs --redis; 1: this process)",
        default=1,
        metavar="N",
        group=SCALING,
    ),
    Option(
        "input_channels",
        _text("a Redis channel name or pattern"),
        "also publish every message of this Redis channel, on the topic it names "
        "(repeatable; a pattern such as 'prices.*' subscribes to every match; needs --redis)",
        metavar="NAME",
        group=SCALING,
        repeatable=True,
        flag="--input-channel",
    ),
)
"""Every option of ``serve``, in ``--help`` order within each group."""

_BY_KEY = {opt.key: opt for opt in SERVE_OPTIONS}


def option(key: str) -> Option:
    return _BY_KEY[key]


# -- flags ---------------------------------------------------------------------------


def _shown_default(opt: Option) -> str:
    if opt.default is None or opt.default is False:
        return ""
    value = opt.kind.to_toml(opt.default)
    return f" (default: {value})"


def _argument_type(opt: Option) -> Callable[[str], object]:
    def read(text: str) -> object:
        try:
            return opt.kind.from_text(text)
        except Invalid as exc:
            raise argparse.ArgumentTypeError(f"{text!r} {exc}") from None

    return read


def add_arguments(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """One flag per option; a flag not given is ``None`` (so the layers below show)."""
    groups: dict[str, Any] = {}
    exclusive: dict[str, Any] = {}
    for opt in options:
        if opt.group not in groups:
            groups[opt.group] = parser.add_argument_group(opt.group)
        target = groups[opt.group]
        if opt.exclusive is not None:
            if opt.exclusive not in exclusive:
                exclusive[opt.exclusive] = target.add_mutually_exclusive_group()
            target = exclusive[opt.exclusive]
        help_text = opt.help + _shown_default(opt)
        if opt.kind is BOOLEAN:
            target.add_argument(
                *opt.flags,
                dest=opt.key,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
            continue
        target.add_argument(
            *opt.flags,
            dest=opt.key,
            type=_argument_type(opt),
            action="append" if opt.repeatable else "store",
            default=None,
            metavar=opt.metavar,
            help=help_text,
        )


# -- the layers ----------------------------------------------------------------------


class Source(enum.Enum):
    """Where a value came from, strongest first."""

    FLAG = "flag"
    ENV = "environment"
    FILE = "configuration file"
    DEFAULT = "default"


@attrs.frozen
class ConfigFile:
    """A configuration file's values, read and checked against the table."""

    filename: str
    values: Mapping[str, object]


def _from_toml(opt: Option, value: object, filename: str, base: Path) -> object:
    def one(item: object, where: str) -> object:
        try:
            read = opt.kind.from_toml(item)
        except Invalid as exc:
            raise PolicyFileError(
                f"{filename}: {where}: {show_toml(item)} {exc}",
                filename=filename,
                key=where,
                value=item,
            ) from None
        if isinstance(read, str) and opt.kind.path(read):
            return str(base / read)
        return read

    if not opt.repeatable:
        return one(value, opt.key)
    items = value if isinstance(value, list) else [value]
    return tuple(one(item, f"{opt.key}[{n}]") for n, item in enumerate(items))


def read_config(filename: str, options: Sequence[Option] = SERVE_OPTIONS) -> ConfigFile:
    """Read a configuration file; errors name the file, the key and the value."""
    return parse_config(
        read_text(filename), filename=filename, base=Path(filename).parent, options=options
    )


def parse_config(
    text: str,
    *,
    filename: str = "<string>",
    base: str | os.PathLike[str] = ".",
    options: Sequence[Option] = SERVE_OPTIONS,
) -> ConfigFile:
    """A configuration file's text, checked; relative paths in it are relative to ``base``."""
    document = read_toml(text, filename)
    known = {opt.key: opt for opt in options}
    values: dict[str, object] = {}
    for key, value in document.items():
        opt = known.get(key)
        if opt is None:
            close = difflib.get_close_matches(key, known, n=1)
            if not close:
                raise unknown_key(filename, key, known)
            raise PolicyFileError(
                f"{filename}: {key}: unknown key (did you mean {show_toml(close[0])}?)",
                filename=filename,
                key=key,
            )
        values[key] = _from_toml(opt, value, filename, Path(base))
    return ConfigFile(filename, values)


def is_config_document(document: Mapping[str, object]) -> bool:
    """Whether a parsed TOML document is a configuration file: it has keys, and none of
    a policy file's (``stage``, ``description``) or a routing file's."""
    theirs = ("stage", "description", "default", "default_topics", "route")
    return bool(document) and not any(key in document for key in theirs)


def _from_env(opt: Option, text: str) -> object:
    try:
        if opt.repeatable:
            return tuple(opt.kind.from_text(item.strip()) for item in text.split(","))
        return opt.kind.from_text(text)
    except Invalid as exc:
        raise UsageError(f"{opt.env}={text!r} {exc}") from None


@attrs.frozen
class Settings:
    """Each option's value and where it came from; what the rest of ``serve`` reads."""

    values: Mapping[str, object]
    sources: Mapping[str, Source]
    config: str | None = None
    """The configuration file's name, if one was read."""
    warnings: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def given(self, key: str) -> bool:
        return self.sources[key] is not Source.DEFAULT

    def where(self, key: str, item: object = None) -> str:
        """How the user gave ``key``, with its value (or only ``item`` of a repeatable
        option's values), for an error message."""
        opt = _BY_KEY[key]
        value = self.values[key] if item is None else (item,)
        source = self.sources[key]
        if opt.repeatable:
            shown: object = [opt.kind.to_toml(one) for one in cast(tuple[object, ...], value)]
        else:
            shown = opt.kind.to_toml(value)
        if source is Source.FILE:
            return f"{self.config}: {key} = {show_toml(shown)}"
        if source is Source.ENV:
            return f"{opt.env}={show_toml(shown)}"
        if isinstance(shown, list):
            shown = " ".join(f"{opt.long_flag} {item}" for item in shown)
            return str(shown)
        if opt.kind is BOOLEAN:
            return opt.long_flag if value else "--no-" + opt.long_flag[2:]
        return f"{opt.long_flag} {shown}"

    def name(self, key: str, *, like: str) -> str:
        """``key`` as the user would write it where ``like`` was given: a file's key,
        else the flag and its metavar."""
        if self.sources[like] is Source.FILE:
            return key
        opt = _BY_KEY[key]
        return opt.long_flag if opt.metavar is None else f"{opt.long_flag} {opt.metavar}"

    def fail(self, key: str, constraint: str, item: object = None) -> Exception:
        """The error for ``key``'s value: a :class:`PolicyFileError` if the file gave it
        (exit 1, like a bad policy file), else a :class:`UsageError` (exit 2)."""
        message = f"{self.where(key, item)}: {constraint}"
        if self.sources[key] is Source.FILE:
            assert self.config is not None
            return PolicyFileError(message, filename=self.config, key=key, value=self.values[key])
        return UsageError(message)


def resolve(
    flags: argparse.Namespace | Mapping[str, object],
    environ: Mapping[str, str],
    config: ConfigFile | None,
    options: Sequence[Option] = SERVE_OPTIONS,
    *,
    secrets: Iterable[str] = (),
) -> Settings:
    """Layer the flags over the environment over the file over the defaults.

    ``secrets`` are variables options name (``--token-env``'s), which are not warned
    about as unknown ``WSFANOUT_*`` variables.
    """
    given: dict[str, Any] = vars(flags) if isinstance(flags, argparse.Namespace) else dict(flags)
    layers: list[tuple[Source, dict[str, object]]] = [(Source.FLAG, {})]
    for opt in options:
        value = given.get(opt.key)
        if value is not None:
            layers[0][1][opt.key] = tuple(value) if opt.repeatable else value
    env_values: dict[str, object] = {}
    for opt in options:
        if opt.env in environ:
            env_values[opt.key] = _from_env(opt, environ[opt.env])
    layers.append((Source.ENV, env_values))
    layers.append((Source.FILE, dict(config.values) if config is not None else {}))
    values: dict[str, object] = {}
    sources: dict[str, Source] = {}
    for opt in options:
        values[opt.key], sources[opt.key] = opt.default, Source.DEFAULT
        for source, layer in layers:
            if opt.key in layer:
                values[opt.key], sources[opt.key] = layer[opt.key], source
                break
    _settle_exclusive(options, layers, values, sources, config)
    return Settings(
        values,
        sources,
        config=None if config is None else config.filename,
        warnings=tuple(_unknown_variables(environ, options, secrets, values)),
    )


def _settle_exclusive(
    options: Sequence[Option],
    layers: list[tuple[Source, dict[str, object]]],
    values: dict[str, object],
    sources: dict[str, Source],
    config: ConfigFile | None,
) -> None:
    groups: dict[str, list[Option]] = {}
    for opt in options:
        if opt.exclusive is not None:
            groups.setdefault(opt.exclusive, []).append(opt)
    for members in groups.values():
        for source, layer in layers:
            present = [opt for opt in members if opt.key in layer]
            if len(present) > 1:
                names = [_name_in(source, opt, config) for opt in present]
                error = f"{' and '.join(names)}: give one of them, not both"
                if source is Source.FILE:
                    assert config is not None
                    raise PolicyFileError(error, filename=config.filename, key=present[1].key)
                raise UsageError(error)
            if present:  # the strongest source decides; the others' values are dropped
                for opt in members:
                    if opt is not present[0]:
                        values[opt.key], sources[opt.key] = opt.default, Source.DEFAULT
                break


def _name_in(source: Source, opt: Option, config: ConfigFile | None) -> str:
    if source is Source.FILE:
        return f"{config.filename if config else '<file>'}: {opt.key}"
    return opt.env if source is Source.ENV else opt.long_flag


def _unknown_variables(
    environ: Mapping[str, str],
    options: Sequence[Option],
    secrets: Iterable[str],
    values: Mapping[str, object],
) -> Iterable[str]:
    known = {opt.env for opt in options} | {ENV_PREFIX + "CONFIG"} | set(secrets)
    for opt in options:  # variables that hold a secret for an option are not options
        if opt.key.endswith("_env") and isinstance(values.get(opt.key), str):
            known.add(str(values[opt.key]))
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, [opt.env for opt in options], n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            yield f"warning: ignoring {name}: no option reads it{hint}"
