"""PHALANX_CRASH_AT: which hit of which point kills the process, and that it is a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from phalanx.checkpoint import crashpoints
from phalanx.checkpoint.crashpoints import ENV_VAR, crash_point, parse_crash_plan
from phalanx.errors import ConfigError

CALL_X_THREE_TIMES = textwrap.dedent(
    """
    from phalanx.checkpoint.crashpoints import crash_point
    for i in (1, 2, 3):
        print(f"before {i}", flush=True)
        crash_point("x")
        print(f"after {i}", flush=True)
    """
)


@pytest.fixture(autouse=True)
def fresh_plan() -> Iterator[None]:
    crashpoints.reset()
    yield
    crashpoints.reset()


def test_the_process_dies_of_sigkill_at_the_named_hit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CALL_X_THREE_TIMES],
        env={**os.environ, ENV_VAR: "x@2"}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert done.stdout.split("\n") == ["before 1", "after 1", "before 2", ""]


@pytest.mark.parametrize(
    ("text", "plan"),
    [
        ("", {}),
        ("a", {"a": 1}),
        ("a@3", {"a": 3}),
        (" a@3 , checkpoint.after_state@2 ,", {"a": 3, "checkpoint.after_state": 2}),
        ("a@4,a@2", {"a": 2}),
    ],
)
def test_plans_parse_to_the_earliest_hit_per_point(text: str, plan: dict[str, int]) -> None:
    assert parse_crash_plan(text) == plan


@pytest.mark.parametrize("text", ["a@", "a@0", "a@-1", "a@x", "@2"])
def test_a_malformed_plan_names_the_variable_and_the_entry(text: str) -> None:
    with pytest.raises(ConfigError, match=ENV_VAR):
        parse_crash_plan(text)


def test_points_not_in_the_plan_and_hits_before_the_due_one_return(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_VAR, "x@3")
    crash_point("y")
    crash_point("x")
    crash_point("x")  # the third would kill this very process


def test_reset_rereads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "x@2")
    crash_point("x")
    monkeypatch.setenv(ENV_VAR, "")
    crashpoints.reset()
    for _ in range(3):
        crash_point("x")
