"""A client session joins again after a coordinator restart even when no call was served
since its join (the coordinator died right after it), and still ends on a coordinator that
keeps refusing the session, after one more join, instead of looping."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any, cast

import pytest

from phalanx.core.messages import Envelope
from phalanx.errors import AuthError
from phalanx.runtime.grpc.client.backoff import Backoff, Retrying
from phalanx.runtime.grpc.client.calls import CoordinatorCalls
from phalanx.runtime.grpc.client.leader import Leadership
from phalanx.runtime.grpc.client.session import Identity, Session
from phalanx.runtime.grpc.session import Caller, JoinRequest, Lease


class Calls:
    """Joins hand out sessions s1, s2, ...; ``known`` is what the coordinator remembers."""

    def __init__(self) -> None:
        self.joins = 0
        self.known: set[str] = set()
        self.leadership = Leadership()
        self.connection = SimpleNamespace(target="127.0.0.1:7000")

    def join(self, request: JoinRequest) -> Lease:
        self.joins += 1
        session = f"s{self.joins}"
        self.known.add(session)
        return Lease(Envelope(), request.client, session, 0.5, 2.0)


def session_over(calls: Calls) -> Session:
    retrying = Retrying(Backoff(0.01, 0.02, random.Random(1)), sleep=lambda _s: None)
    return Session(cast(CoordinatorCalls, calls), Identity(3, "token", 10), retrying,
                   give_up_s=1.0)  # fmt: skip


def pull(calls: Calls) -> Any:
    def call(caller: Caller) -> str:
        if caller.session not in calls.known:
            raise AuthError(f"client {caller.client}: unknown or expired session; join first")
        return caller.session

    return call


def test_joins_again_when_the_coordinator_restarted_before_any_call_was_served() -> None:
    calls = Calls()
    session = session_over(calls)
    session.join()
    calls.known.clear()  # the coordinator restarted right after the join
    assert session.call("pull", pull(calls)) == "s2" and calls.joins == 2
    calls.known.clear()  # and again, after a call was served: joins again once more
    assert session.call("pull", pull(calls)) == "s3" and calls.joins == 3


def test_a_coordinator_that_keeps_refusing_ends_the_client_after_one_more_join() -> None:
    calls = Calls()
    session = session_over(calls)
    session.join()

    def refused(caller: Caller) -> str:
        raise AuthError("unknown or expired session; join first")

    with pytest.raises(AuthError, match="unknown or expired"):
        session.call("pull", refused)
    with pytest.raises(AuthError, match="unknown or expired"):
        session.call("pull", refused)
    assert calls.joins == 2
