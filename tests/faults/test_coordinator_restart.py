"""The coordinator SIGKILLed mid-round and restarted with ``--resume`` on the same port: every
client joins the new incarnation within the backoff cap + 1 s of its listening (issue 11), the
next round commits, and the run ends with every committed round kept. Real processes; the
timings come from a watcher of the coordinator's log and history (``RestartRun``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.errors import ConfigError
from phalanx.testing.chaos.restart import RestartRun
from phalanx.testing.chaos.watch import FileWatch

CAP_S = 1.0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_clients_are_back_within_the_backoff_cap_plus_one_second(tmp_path: Path) -> None:
    run = RestartRun(tmp_path, clients=3, rounds=4, kill_after=(1,), backoff_cap_s=CAP_S,
                     epochs=10, deadline_s=200.0)  # fmt: skip
    outcome = run.run()
    assert outcome.verdict.ok, "\n".join(outcome.verdict.problems)
    [kill] = outcome.kills
    assert kill.round == 2 and kill.listen_s is not None, kill
    back = kill.all_back_s(clients=3)
    assert back is not None and back <= CAP_S + 1.0, kill.back_s
    assert kill.commit_s is not None, "no round committed after the restart"


def test_a_kill_needs_a_round_before_it_and_one_after(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="1 to rounds - 2"):
        RestartRun(tmp_path, rounds=4, kill_after=(0,))
    with pytest.raises(ConfigError, match="1 to rounds - 2"):
        RestartRun(tmp_path, rounds=4, kill_after=(3,))


def test_a_file_watch_times_whole_lines_and_knows_where_each_starts(tmp_path: Path) -> None:
    path = tmp_path / "coordinator.log"
    watch = FileWatch(path)
    watch.poll(1.0)  # no file yet: nothing, no error
    path.write_bytes(b"one\ntw")
    watch.poll(2.0)
    assert [(x.at, x.offset, x.text) for x in watch.lines] == [(2.0, 0, "one")]
    assert watch.size() == 4  # the torn "tw" is not read yet
    with path.open("ab") as handle:
        handle.write(b"o\nthree\n")
    watch.poll(3.0)
    assert [(x.at, x.offset, x.text) for x in watch.lines[1:]] == [
        (3.0, 4, "two"),
        (3.0, 8, "three"),
    ]
    assert watch.size() == path.stat().st_size
