"""The presets are found by name, and the JavaScript client and the status page are
there, after a plain install of the built wheel, which carries its licence and the one
version.

Builds the wheel with the build backend already in the dev environment (no download),
installs it in a new virtual environment, and runs it from outside the checkout.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import wsfanout
from wsfanout import client_script_source
from wsfanout.files import load_policy, preset_names

ROOT = Path(__file__).resolve().parents[2]


def run(*command: str | Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.wheel
def test_the_installed_wheel_finds_every_preset_and_the_javascript_client(
    tmp_path: Path,
) -> None:
    pip = (sys.executable, "-m", "pip")
    run(
        *pip,
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        tmp_path,
        ROOT,
        cwd=ROOT,
    )
    (wheel,) = tmp_path.glob("wsfanout-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    run(*pip, "--python", python, "install", "--quiet", wheel, cwd=tmp_path)

    script = (
        "import wsfanout, wsfanout.files\n"
        "print(wsfanout.__file__)\n"
        "print(' '.join(wsfanout.files.preset_names()))\n"
        "print(repr(wsfanout.files.load_policy('market-data')))\n"
        "print(wsfanout.client_script_source().hex())\n"
        "import importlib.resources\n"
        "page = importlib.resources.files('wsfanout._cli').joinpath('status.html')\n"
        "print(page.read_text().count('<title>wsfanout status</title>'))\n"
    )
    where, names, market_data, script_hex, page = run(
        python, "-c", script, cwd=tmp_path
    ).splitlines()
    assert page == "1", "the status page is not in the wheel"
    assert Path(where).is_relative_to(venv), "imported the checkout, not the wheel"
    assert tuple(names.split()) == preset_names()
    assert market_data == repr(load_policy("market-data"))
    assert bytes.fromhex(script_hex) == client_script_source()
    listing = run(venv / "bin" / "wsfanout", "check", "--list", cwd=tmp_path)
    for name in preset_names():
        assert f"  {name}\n" in listing

    # Packaging: the licence ships, and the version has one source.
    metadata = "import importlib.metadata as m\nd = m.metadata('wsfanout')\n" + (
        "print(d['Version']); print(d['License-Expression']); print(d['License-File'])\n"
        "import wsfanout; print(wsfanout.__version__)\n"
        "print(sorted(m.files('wsfanout'), key=str) and "
        "any(str(f).endswith('licenses/LICENSE') for f in m.files('wsfanout')))\n"
    )
    version, expression, license_file, module_version, shipped = run(
        python, "-c", metadata, cwd=tmp_path
    ).splitlines()
    assert (version, module_version) == (wsfanout.__version__, wsfanout.__version__)
    assert (expression, license_file, shipped) == ("MIT", "LICENSE", "True")
