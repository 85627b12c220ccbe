"""The coordinator SIGKILLed mid-round and restarted with ``--resume`` on the same port: every
client joins the new incarnation within the backoff cap + 1 s of its listening (issue 11), the
next round commits, and the run ends with every committed round kept. Real processes; the
timings come from a watcher of the coordinator's log and history (``RestartRun``). The bound
is a wall-clock property: on a machine loaded past 4 runnable tasks per CPU (where a restart
alone took 40-60 s in docs/coordinator_restart.md) the test still checks that every client
came back and the chain held, then skips the timing, saying so."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import pytest

from phalanx.errors import ConfigError
from phalanx.testing.chaos.restart import Kill, RestartRun
from phalanx.testing.chaos.watch import FileWatch

CAP_S = 1.0
LOAD_PER_CPU = 4.0  # past this the machine, not the clients' backoff, sets the wait


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_clients_are_back_within_the_backoff_cap_plus_one_second(tmp_path: Path) -> None:
    load_before = os.getloadavg()[0]
    run = RestartRun(tmp_path, clients=3, rounds=20, kill_after=(1,), backoff_cap_s=CAP_S,
                     epochs=10, deadline_s=250.0)  # fmt: skip
    outcome = run.run()
    assert outcome.verdict.ok, "\n".join(outcome.verdict.problems)
    [kill] = outcome.kills
    # Timed as a fraction of round 1's length into round 2, the kill lands in a later round when
    # round 2 ends sooner (a quiet machine): either way mid-round. 20 rounds: on a quiet
    # machine a round takes 0.1 s, and a run that ended within the clients' backoff would
    # not wait for the last of them to come back.
    assert kill.round >= 2 and kill.listen_s is not None, kill
    assert len(kill.back_s) == 3 and kill.commit_s is not None, kill
    load = max(load_before, os.getloadavg()[0])
    cpus = os.cpu_count() or 1
    if load > LOAD_PER_CPU * cpus:
        pytest.skip(
            f"every client came back and the chain held, but the {CAP_S + 1.0:g} s bound is "
            f"not judged at a load average of {load:.1f} on {cpus} CPUs: the wait is then the "
            f"machine's (back after {max(kill.back_s.values()):.2f} s)"
        )
    back = kill.all_back_s(clients=3)
    assert back is not None and back <= CAP_S + 1.0, kill.back_s


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


def test_a_kill_whose_run_ended_before_the_bound_is_not_judged() -> None:
    from benchmarks.coordinator_restart import cut_short, to_markdown

    back = {0: 0.2, 1: 0.4}
    ended = Kill(3, 1.4, back, 0.5, observed_s=0.8)  # the run ended 0.8 s after listening
    slow = Kill(3, 1.4, back, 0.5, observed_s=5.0)  # client 2 not back in 5 s: a miss
    whole = Kill(3, 1.4, back | {2: 0.6}, 0.5, observed_s=0.8)
    assert cut_short(ended, clients=3, bound=2.0)
    assert not cut_short(slow, clients=3, bound=2.0)
    assert not cut_short(whole, clients=3, bound=2.0)
    saved = {
        "launches": [{"kills": [asdict(k) for k in (ended, whole)], "ok": True, "problems": []}],
        "setup": {"clients": 3, "backoff_cap_s": 1.0, "rounds": 12, "kill_after": [1, 4]},
        "machine": {"cpus": 2},
    }
    text = to_markdown(saved)
    assert "2 SIGKILLs" in text and "1 of 1 kills: PASS (1 more not judged" in text
    saved["launches"][0]["kills"].append(asdict(slow))
    assert "1 of 2 kills: FAIL" in to_markdown(saved)
