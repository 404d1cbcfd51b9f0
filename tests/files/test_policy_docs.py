"""The how-to renders the registry and the presets as they are, not as they once were."""

from pathlib import Path

import pytest

from wsfanout._files.policy_files import parameters
from wsfanout.files import STAGE_KINDS, presets

DOC = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "policy-files.md"


def test_the_stage_kinds_table_is_the_registry() -> None:
    rows = ["| kind | builds | keys |", "|---|---|---|"]
    for kind, cls in STAGE_KINDS.items():
        keys = ", ".join(f"`{k}` ({v.what.split(' ', 1)[1]})" for k, v in parameters(kind).items())
        rows.append(f"| `{kind}` | `{cls.__name__}` | {keys or 'none'} |")
    assert "\n".join(rows) in DOC.read_text()


@pytest.mark.parametrize("name", list(presets()))
def test_every_preset_is_documented_with_its_policy_and_description(name: str) -> None:
    preset = presets()[name]
    code = repr(preset.policy).replace("|", "\\|")
    description = preset.description.replace("key=...", "`key=...`")
    assert f"| `{name}` | `{code}` | {description} |" in DOC.read_text()
