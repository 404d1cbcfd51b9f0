"""The pacing benchmark's slow network fails clearly where it cannot be built, and
shapes only the veth it adds.

Building the namespace needs root and changes the machine's network, so these tests
check the commands and the refusals, not a live link (``make bench-pacing
ARGS="--network-rate 50000"`` does that).
"""

from __future__ import annotations

import pytest

from benchmarks import pacing


def test_the_shaper_is_on_the_server_side_of_its_own_veth_only() -> None:
    commands = pacing.network_commands(50_000, 1.0)
    shaping = [command for command in commands if command[0] == "tc"]
    bucket = ["rate", "400000bit", "burst", str(2 * pacing.FRAME), "limit", "50000"]
    assert shaping == [["tc", "qdisc", "add", "dev", pacing.SERVER_LINK, "root", "tbf", *bucket]]
    # The only loopback touched is the namespace's own (``ip -n NAMESPACE``).
    for command in commands:
        assert "lo" not in command or command[1:3] == ["-n", pacing.NAMESPACE]
    assert commands[0] == ["ip", "netns", "add", pacing.NAMESPACE]


def test_a_tiny_queue_still_holds_two_frames() -> None:
    (shaping,) = [c for c in pacing.network_commands(1_000, 0.001) if c[0] == "tc"]
    assert shaping[shaping.index("limit") + 1] == str(2 * pacing.FRAME)


def test_missing_tools_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    missing = pytest.raises(pacing.NetworkError, match=r"needs ip and tc \(iproute2\)")
    with missing, pacing.slow_network(50_000, 1.0):
        pytest.fail("the block ran without a network")


def test_a_refused_command_says_what_and_why() -> None:
    with pytest.raises(pacing.NetworkError, match="failed with status 1: no such"):
        pacing._run("sh", "-c", "echo no such device >&2; exit 1")


def test_main_reports_the_refusal_and_runs_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert pacing.main(["--network-rate", "50000"]) == 2
    assert "needs ip and tc" in capsys.readouterr().err


def test_a_rate_that_is_not_positive_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        pacing.main(["--network-rate", "0"])
    assert "--network-rate must be > 0, not 0.0" in capsys.readouterr().err
