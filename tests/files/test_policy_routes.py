"""A routing file picks each subscriber's policy from its request; first match wins."""

import re
from pathlib import Path

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request

from wsfanout import PolicyFileError
from wsfanout.files import Route, Routes, TopicNotAllowed, load_policy, load_routes, parse_routes
from wsfanout.policies import DropOldest, SkipToLatest

ROUTES = """
default = "dashboard"

[[route]]
path = "/prices/*"
policy = "market-data"

[[route]]
query = { client = "mobile" }
policy = "notifications"

[[route]]
header = { "X-Network" = "slow*" }
policy = "mine.toml"

[[route]]
subprotocol = "chat.v1"
policy = "chat"

[[route]]
path = "/logs"
query = { level = "debug" }
policy = "log-tail"
"""


def request(path: str, **headers: str) -> Request:
    return Request(path, Headers({k.replace("_", "-"): v for k, v in headers.items()}))


@pytest.fixture
def routes(tmp_path: Path) -> Routes:
    (tmp_path / "mine.toml").write_text('[[stage]]\nkind = "drop-oldest"\nmax_messages = 8\n')
    (tmp_path / "routes.toml").write_text(ROUTES)
    return load_routes(tmp_path / "routes.toml")


@pytest.mark.parametrize(
    ("path", "headers", "subprotocol", "chosen"),
    [
        ("/prices/EURUSD", {}, None, "market-data"),
        ("/prices/EURUSD?client=mobile", {}, None, "market-data"),  # first match wins
        ("/news?client=mobile", {}, None, "notifications"),
        ("/news?client=desktop&client=mobile", {}, None, "notifications"),
        ("/news", {"X_Network": "slow-3g"}, None, "mine.toml"),
        ("/news", {"x_network": "slow"}, None, "mine.toml"),  # header names ignore case
        ("/news", {}, "chat.v1", "chat"),
        ("/logs?level=debug", {}, None, "log-tail"),
        ("/logs?level=info", {}, None, "dashboard"),  # every condition must hold
        ("/logs", {}, None, "dashboard"),
        ("/", {}, "chat.v2", "dashboard"),
    ],
)
def test_the_first_matching_route_gives_the_policy(
    routes: Routes, path: str, headers: dict[str, str], subprotocol: str | None, chosen: str
) -> None:
    route = routes.route_for(request(path, **headers), subprotocol)
    assert route.policy_name == chosen


def test_routes_load_policies_by_name_and_by_path_relative_to_the_routing_file(
    routes: Routes,
) -> None:
    assert routes.default.policy == SkipToLatest()
    assert routes.routes[0].policy == load_policy("market-data")
    assert routes.routes[2].policy == DropOldest(max_messages=8)
    assert routes.subprotocols == ("chat.v1",)


def test_routes_written_in_code_are_the_same_function() -> None:
    routes = Routes(
        (Route(path="/fast*", policy=DropOldest(max_messages=4)),),
        Route(policy=SkipToLatest()),
    )
    assert routes.route_for(request("/fast-1")).policy == DropOldest(max_messages=4)
    assert routes.route_for(request("/slow")).policy == SkipToLatest()
    assert routes.routes[0].describe() == 'path = "/fast*"'
    assert routes.default.describe() == "*"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[route]]\npath = "/a"\npolicy = "chat"\n',
            r"^routes\.toml: default: missing \(expected the policy of subscribers no route "
            r'matches, e\.g\. default = "dashboard"\)$',
        ),
        (
            'default = "chat"\nroutes = []\n',
            r'^routes\.toml: routes: unknown key \(expected one of "default", "default_topics", '
            r'"route"\)$',
        ),
        (
            'default = "chat"\n[[route]]\npath = "/a"\npolicy = "chat"\ntopics = "news"\n',
            r'^routes\.toml: route\[0\]\.topics: "news" is not a list of topic names '
            r'\(expected e\.g\. \["news", "alerts"\]\)$',
        ),
        (
            'default = "chat"\ndefault_topics = ["news", ""]\n',
            r'^routes\.toml: default_topics: \["news", ""\] is not a list of topic names ',
        ),
        (
            'default = "chat"\n[[route]]\npath = "/a"\n',
            r"^routes\.toml: route\[0\]\.policy: missing \(expected a preset name or a \.toml "
            r'file, e\.g\. "chat"\)$',
        ),
        (
            'default = "chat"\n[[route]]\npolicy = "chat"\n',
            r"^routes\.toml: route\[0\]: no condition \(expected at least one of path, query, "
            r"header, subprotocol; default covers everyone else\)$",
        ),
        (
            'default = "chat"\n[[route]]\npath = "/a"\npolicy = "chat"\nmethod = "GET"\n',
            r'^routes\.toml: route\[0\]\.method: unknown key \(expected one of "path", "query", '
            r'"header", "subprotocol", "policy", "topics"\)$',
        ),
        (
            'default = "chat"\n[[route]]\nquery = "client=mobile"\npolicy = "chat"\n',
            r'^routes\.toml: route\[0\]\.query: "client=mobile" is not a table '
            r'\(expected e\.g\. \{ name = "pattern" \}\)$',
        ),
        (
            'default = "chat"\n[[route]]\nheader = { X-Slow = 1 }\npolicy = "chat"\n',
            r"^routes\.toml: route\[0\]\.header\.X-Slow: 1 is not a string pattern$",
        ),
        (
            'default = "chat"\n[[route]]\npath = ""\npolicy = "chat"\n',
            r'^routes\.toml: route\[0\]\.path: "" is not a non-empty string$',
        ),
        (
            'default = "chatt"\n',
            r'^routes\.toml: default: "chatt" is not a preset \(expected one of "chat", '
            r'"dashboard", "event-feed", "live-feed", "log-tail", "market-data", "mobile", '
            r'"notifications"; or a path to a \.toml file\)$',
        ),
        (
            'default = "chat"\nroute = 3\n',
            r"^routes\.toml: route: 3 is not a list of routes \(expected \[\[route\]\] tables\)$",
        ),
        (
            'default = "chat"\n[[route\n',
            r"^routes\.toml: not valid TOML: .* \(at line 2, column \d+\)$",
        ),
    ],
)
def test_every_mistake_in_a_routing_file_is_named(text: str, message: str) -> None:
    with pytest.raises(PolicyFileError, match=message):
        parse_routes(text, filename="routes.toml")


def test_an_error_in_a_referenced_policy_file_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text('[[stage]]\nkind = "throttle"\nrate = "fast"\n')
    (tmp_path / "routes.toml").write_text('default = "mine.toml"\n')
    mine = re.escape(str(tmp_path / "mine.toml"))
    routes_file = re.escape(str(tmp_path / "routes.toml"))
    with pytest.raises(
        PolicyFileError,
        match=rf'^{routes_file}: default: {mine}: stage\[0\]\.rate: "fast" is not a rate ',
    ):
        load_routes(tmp_path / "routes.toml")


def test_a_route_sets_or_restricts_the_topics_of_its_subscribers() -> None:
    routes = parse_routes(
        'default = "dashboard"\ndefault_topics = ["public"]\n'
        '[[route]]\npath = "/desk/*"\npolicy = "chat"\ntopics = ["news", "alerts", "news"]\n'
        '[[route]]\npath = "/all/*"\npolicy = "chat"\n',
        filename="routes.toml",
    )
    desk, anything = routes.routes
    assert desk.topics == ("news", "alerts")
    assert desk.topics_for(None) == frozenset({"news", "alerts"})
    assert desk.topics_for(["alerts"]) == frozenset({"alerts"})
    with pytest.raises(TopicNotAllowed) as refused:
        desk.topics_for(["alerts", "secret", "payroll"])
    assert str(refused.value) == (
        'topic "payroll" not allowed here (expected one of "news", "alerts")'
    )
    assert (refused.value.topic, refused.value.allowed) == ("payroll", ("news", "alerts"))
    assert anything.topics_for(None) is None  # every topic
    assert anything.topics_for(["x", "y"]) == frozenset({"x", "y"})
    assert routes.default.topics_for(None) == frozenset({"public"})
