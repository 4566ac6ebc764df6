"""The example systemd units under deploy/ are valid units (systemd-analyze verify, with no warning)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
INSTALLED_AT = "/opt/guildlink"


def verify(
    tmp_path: Path, *names: str, edit: tuple[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Verify the units as installed here: /opt/guildlink becomes this checkout (whose python exists)."""
    checkout = str(Path(sys.executable).parents[2])
    for unit in DEPLOY.glob("*.service"):
        text = unit.read_text().replace(INSTALLED_AT, checkout)
        if edit is not None:
            text = text.replace(*edit)
        (tmp_path / unit.name).write_text(text)
    shutil.copy(tmp_path / "guildlink@.service", tmp_path / "guildlink@a.service")
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / name) for name in names)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_single_process_and_the_fleet_units_verify_cleanly(tmp_path: Path) -> None:
    result = verify(tmp_path, "guildlink.service", "guildlink@a.service")
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_a_misspelled_directive_would_be_caught(tmp_path: Path) -> None:
    result = verify(tmp_path, "guildlink.service", edit=("Restart=on-failure", "Restrat=on-failure"))
    assert "Unknown key" in result.stderr


@pytest.mark.parametrize("unit", ["guildlink.service", "guildlink@.service"])
def test_units_stop_restarting_on_the_exit_codes_an_operator_must_fix(unit: str) -> None:
    text = (DEPLOY / unit).read_text()
    assert "RestartPreventExitStatus=2 3 4" in text and "Restart=on-failure" in text
    assert "NoNewPrivileges=yes" in text and "DynamicUser=yes" in text
