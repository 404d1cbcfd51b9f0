"""``wsfanout demo`` runs to completion by itself and shows the fast clients unaffected."""

import os
import re
import subprocess
import sys

import pytest
from cli_process import WSFANOUT

# Runs the command as ``wsfanout`` does, with rich made impossible to import.
WITHOUT_RICH = (
    "import sys; sys.modules['rich'] = None; from wsfanout._cli import main; "
    "sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("display", ["rich", "without rich"])
def test_a_short_demo_shows_the_crowd_and_a_summary(display: str) -> None:
    command = [str(WSFANOUT)] if display == "rich" else [sys.executable, "-c", WITHOUT_RICH]
    result = subprocess.run(
        [*command, "demo", "--duration", "2", "--clients", "6"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    assert ("(install wsfanout[cli] for a live table)" in out) == (display == "without rich")
    assert re.search(r"after 2 s: 400 published", out)
    for name, policy in [
        ("fast-1", "chat"),
        ("slow-2", "market-data"),
        ("stalled-3", "notifications"),
        ("flapping-4", "dashboard"),
        ("fast-5", "log-tail"),
        ("slow-6", "dashboard"),
    ]:
        assert re.search(rf"^{name} +{policy} +\S", out, re.MULTILINE), f"{name} not in the table"
    assert "  fast-1 (chat): read 400 of 400, all of them, in order" in out
    assert "  fast-5 (log-tail): read 400 of 400, all of them, in order" in out
    assert "written: messages the server wrote to the client's connection; read:" in out
    slow = re.search(
        r"slow-2 \(market-data\): read \d+; its policy dropped (\d+) \((\d+) of them replaced",
        out,
    )
    assert slow is not None
    replaced, dropped = int(slow[2]), int(slow[1])
    assert replaced > 0, "a slow market-data client should have had updates conflated"
    assert dropped >= replaced, "dropped counts every message let go, the replaced ones too"
    # The last table's columns: a fast client read what was written to it.
    rows = re.findall(r"^fast-1 +chat +\S+ +(\d+) +(\d+) +(\d+) +(\d+)", out, re.MULTILINE)
    assert rows, "fast-1 not in the table"
    assert rows[-1] == ("400", "400", "0", "0")
    assert out.rstrip().endswith(
        "Fast clients were unaffected by the 4 others: every message, in order."
    )


def test_the_demo_serves_its_crowd_on_the_status_page() -> None:
    import json
    import urllib.request

    demo = subprocess.Popen(
        [str(WSFANOUT), "demo", "--duration", "3", "--clients", "5", "--plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            found = re.search(r"Watch them live in a browser: (http://127\.0\.0\.1:\d+/)$", line)
            if found:
                break
        else:
            raise AssertionError("the demo printed no status page address")
        with urllib.request.urlopen(found[1] + "clients", timeout=15) as response:
            page = json.load(response)
        # Each client under its preset's name (the flapping one may be away just now).
        policies = {c["policy"] for c in page["clients"]}
        assert {"chat", "market-data", "notifications", "log-tail"} <= policies
        assert policies <= {"chat", "market-data", "notifications", "log-tail", "dashboard"}
        with urllib.request.urlopen(found[1], timeout=15) as response:
            assert b"<title>wsfanout status</title>" in response.read()
        assert demo.wait(timeout=60) == 0
    finally:
        demo.kill()
        demo.wait()
