"""``phalanx serve`` refuses bad options with a ConfigError naming the problem, before it
creates a run directory or opens a port."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from phalanx.cli.app import app
from phalanx.errors import ConfigError


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "no credential book: pass --credentials FILE"),
        (["--allow-any-client", "--listen", "nowhere"], "--listen wants HOST:PORT"),
        (["--allow-any-client", "--listen", "127.0.0.1:70000"], "--listen wants HOST:PORT"),
        (["--allow-any-client", "--patience-s", "0.5", "--heartbeat-s", "1"], "must exceed"),
        (["--allow-any-client", "--max-uploads", "0"], "max_uploads must be at least 1"),
    ],
)
def test_serve_refuses_bad_options(tmp_path: Path, options: list[str], message: str) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["serve", "seed", "--out", str(out), *options])
    assert isinstance(result.exception, ConfigError), result.output
    assert message in str(result.exception)
    assert not out.exists()
