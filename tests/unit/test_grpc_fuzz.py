"""Fuzzing what the coordinator decodes: generated (hypothesis) and byte-mutated requests and
push streams go through serde and the update receiver, and the only error that may come out
is a ProtocolError. ``python -m benchmarks.fuzz_wire --messages 1000000`` runs the same
harness at scale."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.test_codec import envelopes, failures, ints, refs, text, updates

from benchmarks.fuzz_wire import LIMITS, PARSERS, Fuzzer
from phalanx.core.messages import ClientUpdate, ModelRef, TaskFailure
from phalanx.errors import ProtocolError
from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.session import Caller, JoinRequest, StatusQuery
from phalanx.runtime.grpc.streams import UpdateReceiver

callers = st.builds(Caller, envelopes, ints, text)


def test_thousands_of_fuzzed_messages_raise_nothing_but_protocol_errors() -> None:
    tally = Fuzzer(seed=7).run(4000)
    assert tally.uncaught == {}, tally.uncaught
    reasons = " ".join(tally.refused)
    for expected in (
        "out of order", "repeated", "chunks missing", "were announced",
        "exceeds the chunk limit", "do not match their digest", "second one arrived",
        "must start with its header", "not a phalanx.v1.", "speaks protocol version",
    ):  # fmt: skip
        assert expected in reasons, f"no case refused for {expected!r}"
    assert tally.decoded > 0  # the generator makes messages that are fine, too


def requests(
    caller: Caller, failure: TaskFailure, join: JoinRequest, ref: ModelRef
) -> dict[str, bytes]:
    return {
        "Join": serde.join_request(join),
        "Heartbeat": serde.heartbeat_request(caller),
        "PullTask": serde.pull_request(caller),
        "GetModel": serde.get_model_request(caller, ref),
        "ReportFailure": serde.report_failure_request(caller, failure),
        "Leave": serde.leave_request(caller, "bye"),
        "Status": serde.status_request(StatusQuery(caller.envelope, caller.session)),
    }


def decodes_or_refuses(work: Callable[[], object]) -> None:
    """Anything but a ProtocolError propagates and fails the test."""
    with contextlib.suppress(ProtocolError):
        work()


@given(
    callers,
    failures,
    st.builds(JoinRequest, envelopes, ints, text, ints),
    refs,
    st.sampled_from(sorted(set(PARSERS) - {"UpdatePart"})),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
    st.integers(0, 400),
)
@settings(max_examples=1500, deadline=None)
def test_generated_requests_with_bytes_changed_or_cut_decode_or_are_refused(
    caller: Caller,
    failure: TaskFailure,
    join: JoinRequest,
    ref: ModelRef,
    method: str,
    edits: list[tuple[int, int]],
    cut: int,
) -> None:
    data = bytearray(requests(caller, failure, join, ref)[method])
    for at, value in edits:
        if data:
            data[at % len(data)] = value
    decodes_or_refuses(lambda: PARSERS[method](bytes(data[: len(data) - cut % 8])))


@given(updates(), callers, st.data())
@settings(max_examples=300, deadline=None)
def test_push_streams_reordered_cut_or_repeated_decode_or_are_refused(
    update: ClientUpdate, caller: Caller, data: st.DataObject
) -> None:
    parts = list(serde.update_parts(caller, update, LIMITS.chunk_bytes))
    order = data.draw(st.lists(st.integers(0, len(parts) - 1), max_size=len(parts) + 2))
    receiver = UpdateReceiver(LIMITS)

    def push() -> None:
        chosen = [parts[i] for i in order]
        receiver.start(chosen[0] if chosen else b"")
        for part in chosen[1:]:
            receiver.add(part)
        receiver.finish(sender=caller.client)

    decodes_or_refuses(push)
