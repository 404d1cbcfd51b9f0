"""``serve``'s options from a configuration file, the environment and flags, in that
order of strength, and ``wsfanout check`` on a configuration file."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from cli_process import GUARD, Process, client
from websockets.typing import Origin

from wsfanout._cli.configure import build_options
from wsfanout._cli.main import build_parser, main
from wsfanout._cli.options import SERVE_OPTIONS, Settings, Source, parse_config, resolve
from wsfanout.exceptions import PolicyFileError

CONFIG = """\
host = "127.0.0.1"
port = 0
policy = "chat"
topic_field = "room"
max_size = "8KiB"
close_timeout = "500ms"
origins = ["https://a.example", "none"]
compression = "off"
"""


def settings_of(argv: list[str], environ: dict[str, str], config: str | None) -> Settings:
    flags = build_parser().parse_args(["serve", *argv])
    parsed = None if config is None else parse_config(config, filename="wsfanout.toml")
    return resolve(flags, environ, parsed)


def test_a_flag_beats_a_variable_which_beats_the_file_which_beats_the_default() -> None:
    settings = settings_of(
        ["--max-size", "2KiB"],
        {"WSFANOUT_MAX_SIZE": "4KiB", "WSFANOUT_COMPRESSION": "shared", "WSFANOUT_PORT": "9001"},
        CONFIG,
    )
    assert (settings["max_size"], settings.sources["max_size"]) == (2048, Source.FLAG)
    assert (settings["compression"], settings.sources["compression"]) == ("shared", Source.ENV)
    assert (settings["port"], settings.sources["port"]) == (9001, Source.ENV)
    assert (settings["topic_field"], settings.sources["topic_field"]) == ("room", Source.FILE)
    assert settings["origins"] == ("https://a.example", None)
    assert (settings["drain_timeout"], settings.sources["drain_timeout"]) == (5.0, Source.DEFAULT)
    options = build_options(settings, {})
    assert (options.max_size, options.compression, options.close_timeout) == (2048, "shared", 0.5)
    assert options.describe == "policy chat"


def test_policy_and_routes_replace_each_other_from_a_stronger_source() -> None:
    settings = settings_of([], {"WSFANOUT_ROUTES": "routes.toml"}, CONFIG)
    assert (settings["routes"], settings["policy"]) == ("routes.toml", None)
    settings = settings_of(["--policy", "dashboard"], {"WSFANOUT_ROUTES": "r.toml"}, CONFIG)
    assert (settings["routes"], settings["policy"]) == (None, "dashboard")
    with pytest.raises(
        PolicyFileError, match=r"^wsfanout\.toml: policy and wsfanout\.toml: routes"
    ):
        settings_of([], {}, 'policy = "chat"\nroutes = "r.toml"\n')


def test_repeatable_options_read_lists_and_comma_separated_variables() -> None:
    settings = settings_of([], {"WSFANOUT_INPUT_CHANNELS": "alerts, prices.*"}, None)
    assert settings["input_channels"] == ("alerts", "prices.*")
    settings = settings_of([], {}, 'origins = "https://one.example"\n')
    assert settings["origins"] == ("https://one.example",)
    settings = settings_of(["--origin", "https://x.example"], {}, CONFIG)
    assert settings["origins"] == ("https://x.example",)  # a flag replaces the list


def test_every_option_is_a_key_a_flag_and_a_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    serve_help = capsys.readouterr().out
    docs = (Path(__file__).resolve().parents[2] / "docs" / "how-to" / "cli.md").read_text()
    for option in SERVE_OPTIONS:
        assert option.long_flag in serve_help
        assert f"`{option.key}`" in docs, f"docs/how-to/cli.md does not mention {option.key}"
        assert option.long_flag in docs, f"docs/how-to/cli.md does not mention {option.long_flag}"
        assert option.env == "WSFANOUT_" + option.key.upper()


BAD_CONFIGS = [
    ("prot = 8765\n", 'prot: unknown key (did you mean "port"?)'),
    ("port = 70000\n", "port: 70000 is not a port number (0-65535; 0 picks one)"),
    ('port = "8765"\n', 'port: "8765" is not a port number'),
    ('max_size = "lots"\n', 'max_size: "lots" is not a size (expected e.g. 4096, "4KiB", "1MiB")'),
    ("exit_on_eof = 1\n", "exit_on_eof: 1 is not a boolean (expected true or false)"),
    ('compression = "zip"\n', 'compression: "zip" is not one of shared, per-connection, off'),
    (
        'origins = ["https://a.example", "b.example"]\n',
        'origins[1]: "b.example" is not an origin (expected scheme://host[:port], e.g. '
        'https://example.com, or "none" to admit clients that send no Origin)',
    ),
    ('host = ""\n', 'host: "" is empty (expected an address; 0.0.0.0 means every interface)'),
    (
        "workers = 2\n",
        "workers = 2: needs redis (worker processes share messages through it)",
    ),
    ('tls_key = "key.pem"\n', 'tls_key = "{dir}/key.pem": needs tls_cert too'),
    (
        'unix = "/tmp/x.sock"\nport = 9000\n',
        "port = 9000: give unix or a host and port, not both",
    ),
    (
        'policy = "chatt"\n',
        'policy: "chatt" is not a preset (expected one of "chat", '
        '"dashboard", "event-feed", "live-feed", "log-tail", "market-data", "mobile", '
        '"notifications"; or a path to a .toml file)',
    ),
    ('policy = "mine.toml"\n', "policy: {dir}/mine.toml: no such file"),
    ("port = \n", "not valid TOML: "),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_check_reports_a_bad_configuration_naming_the_file_the_key_and_the_value(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wsfanout.toml"
    path.write_text(text)
    expected = f"{path}: {message.format(dir=tmp_path)}"
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wsfanout check: error: {expected}"), err
    # serve refuses the same file with the same words, and exits 2 (bad input)
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wsfanout serve: error: {expected}"), err


def test_check_shows_what_a_configuration_file_sets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mine.toml").write_text('[[stage]]\nkind = "drop-oldest"\nmax_messages = 64\n')
    path = tmp_path / "wsfanout.toml"
    path.write_text('policy = "mine.toml"\nport = 9000\ntoken_env = "FANOUT_TOKEN"\n')
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:6] == [
        f"{path}: ok (configuration file)",
        "  listen:      ws://127.0.0.1:9000",
        "  compression: shared: permessage-deflate without context takeover: each message is "
        "compressed once, and the frame shared by every client that accepts it",
        f"  policy:      {tmp_path}/mine.toml",
        "    policy:     DropOldest(max_messages=64)",
        "    bound:      64 messages or 1MiB queued; when full: drop the oldest",
    ]
    assert f'    policy = "{tmp_path}/mine.toml"' in out
    assert "    port = 9000" in out
    assert '    token_env = "FANOUT_TOKEN"' in out  # the variable's name, never a token
    assert '    host = "127.0.0.1"  # default' in out
    assert '    compression = "shared"  # default' in out
    assert '    max_size = "4KiB"  # default' in out


def test_serve_reads_the_configuration_file_and_warns_of_unknown_variables(
    wsfanout: type[Process], tmp_path: Path
) -> None:
    path = tmp_path / "wsfanout.toml"
    path.write_text(CONFIG + 'token_env = "FANOUT_TOKEN"\n')
    server = wsfanout(
        ["serve"],
        env={
            "WSFANOUT_CONFIG": str(path),
            "WSFANOUT_PROT": "1",
            "FANOUT_TOKEN": "s3cret",
            "WSFANOUT_COMPRESSION": "per-connection",
        },
    )
    found = server.wait_for(r"^wsfanout: listening on (ws://\S+) \((.*)\)$")
    assert found[2] == "policy chat, compression per-connection"
    server.wait_for(
        r"^wsfanout: warning: ignoring WSFANOUT_PROT: no option reads it; "
        r"did you mean WSFANOUT_PORT\?$"
    )
    with client(found[1], "/?token=s3cret&topic=r1", origin=Origin("https://a.example")) as ws:
        server.wait_for(r"client connected: .* policy chat topics r1$")
        server.feed('{"room": "r1", "n": 1}\n{"room": "r2", "n": 2}\nend\n')
        assert [ws.recv(timeout=GUARD), ws.recv(timeout=GUARD)] == ['{"room": "r1", "n": 1}', "end"]
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_a_configuration_error_carries_the_file_the_key_and_the_value() -> None:
    with pytest.raises(PolicyFileError) as refused:
        parse_config('origins = ["https://a.example", 7]\n', filename="serve.toml")
    assert (refused.value.filename, refused.value.key, refused.value.value) == (
        "serve.toml",
        "origins[1]",
        7,
    )
    settings = settings_of([], {}, "workers = 3\n")
    with pytest.raises(PolicyFileError) as refused:
        build_options(settings, {})
    assert (refused.value.filename, refused.value.key, refused.value.value) == (
        "wsfanout.toml",
        "workers",
        3,
    )
