"""A client session joins again after a coordinator restart even when no call was served
since its join (the coordinator died right after it, or restarted twice within one call),
and still ends on a coordinator that keeps refusing the session it just issued, after
``MAX_REJOINS`` joins, with exit 6 (not 11: its joins were accepted) instead of looping. A
refused join is a refused credential (exit 11)."""

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
from phalanx.runtime.grpc.client.session import (
    MAX_REJOINS,
    Identity,
    Session,
    SessionChurnError,
)
from phalanx.runtime.grpc.session import Caller, JoinRequest, Lease


class Calls:
    """Joins hand out sessions s1, s2, ...; ``known`` is what the coordinator remembers."""

    def __init__(self) -> None:
        self.joins = 0
        self.known: set[str] = set()
        self.leadership = Leadership()
        self.connection = SimpleNamespace(target="127.0.0.1:7000")
        self.refuse_joins = False

    def join(self, request: JoinRequest) -> Lease:
        if self.refuse_joins:
            raise AuthError(f"client {request.client}: credential not accepted")
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


def test_a_session_forgotten_twice_within_one_call_is_joined_again_twice() -> None:
    calls = Calls()
    session = session_over(calls)
    session.join()
    forgets = iter([True, True])

    def pull_forgetting(caller: Caller) -> str:
        if next(forgets, False):
            calls.known.clear()  # restarted before this call: the session is gone again
        return str(pull(calls)(caller))

    assert session.call("pull", pull_forgetting) == "s3" and calls.joins == 3


def test_a_coordinator_that_keeps_refusing_ends_the_client_with_exit_6() -> None:
    calls = Calls()
    session = session_over(calls)
    session.join()

    def refused(caller: Caller) -> str:
        raise AuthError("unknown or expired session; join first")

    with pytest.raises(SessionChurnError, match="unknown or expired") as caught:
        session.call("pull", refused)
    assert caught.value.exit_code == 6 and calls.joins == 1 + MAX_REJOINS


def test_a_refused_join_is_a_refused_credential() -> None:
    calls = Calls()
    session = session_over(calls)
    session.join()
    calls.known.clear()
    calls.refuse_joins = True
    with pytest.raises(AuthError, match="credential not accepted") as caught:
        session.call("pull", pull(calls))
    assert caught.value.exit_code == 11
