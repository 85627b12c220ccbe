"""Fuzz everything the coordinator decodes: each phalanx.v1 request, and push streams.

Every case is generated from a seeded generator: a well-formed message (sometimes of
another protocol version, or with hostile field values: huge shapes, foreign dtypes,
duplicate names, sizes that do not add up), then byte-mutated (bits flipped, truncated,
bytes inserted, deleted, duplicated, spliced from another message, or all random), or, for a
push stream, shuffled (chunks out of order, missing, repeated, oversized, past the announced
size, a wrong digest, a second header, no header). Each goes through the very code the
coordinator runs on what arrives (``serde``'s parsers and the ``UpdateReceiver``), in
process. The only acceptable outcomes are a decoded message or a ``ProtocolError``;
anything else is counted as uncaught and shown. RSS is read before and after to show memory
stays flat.

    python -m benchmarks.fuzz_wire --messages 1000000
"""

from __future__ import annotations

import argparse
import random
import re
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from phalanx.core.messages import (
    PROTOCOL_VERSION,
    ClientUpdate,
    Envelope,
    ModelRef,
    TaskFailure,
    TaskKey,
)
from phalanx.core.tensors import payload_digest
from phalanx.errors import ProtocolError
from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.assembly import WireLimits
from phalanx.runtime.grpc.proto import phalanx_v1_pb2 as pb
from phalanx.runtime.grpc.session import Caller, JoinRequest, StatusQuery
from phalanx.runtime.grpc.streams import UpdateReceiver
from phalanx.types import FailureKind

LIMITS = WireLimits(max_bytes=4096, max_chunk_bytes=128, chunk_bytes=64)
PARSERS: dict[str, Callable[[bytes], object]] = {
    "Join": serde.parse_join_request,
    "Heartbeat": serde.parse_heartbeat_request,
    "PullTask": serde.parse_pull_request,
    "GetModel": serde.parse_get_model_request,
    "ReportFailure": serde.parse_report_failure_request,
    "Leave": serde.parse_leave_request,
    "Status": serde.parse_status_request,
    "UpdatePart": serde.parse_update_part,
}
STREAM_FAULTS = (
    "valid", "swap", "drop", "repeat", "oversize", "extra", "digest", "two headers",
    "no header", "truncate", "hostile header", "mutate part",
)  # fmt: skip


@dataclass
class Tally:
    cases: int = 0
    messages: int = 0
    decoded: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    uncaught: Counter[str] = field(default_factory=Counter)
    first_uncaught: list[bytes] = field(default_factory=list)


def reason(error: BaseException) -> str:
    """A ProtocolError's message with its particulars (numbers, quoted names) taken out."""
    text = str(error)
    if text.startswith("not a phalanx.v1."):
        text = text.split(":", 1)[0]
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\(-?\d+(, -?\d+)*,?\)", "(shape)", text)
    return f"{type(error).__name__}: {re.sub(r'(?<![A-Za-z0-9])-?[0-9]+', '#', text)[:90]}"


class Fuzzer:
    """Seeded cases; ``run`` decodes until ``messages`` messages went through."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.tally = Tally()
        self._seen: list[bytes] = [b""]  # earlier messages, for splicing

    # -- well-formed material ------------------------------------------------------------
    def integer(self) -> int:
        r = self.rng
        return r.choice((0, 1, -1, 2**63 - 1, -(2**63), r.randrange(1000), r.getrandbits(62)))

    def envelope(self) -> Envelope:
        protocol = PROTOCOL_VERSION if self.rng.random() < 0.9 else self.integer()
        return Envelope(protocol, self.text(), self.integer())

    def text(self) -> str:
        alphabet = "ab\u00e9\u4e2d\U0001f600\x00/\\'\""
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randrange(8)))

    def caller(self) -> Caller:
        return Caller(self.envelope(), self.integer(), self.text())

    def key(self) -> TaskKey:
        return TaskKey(self.integer(), self.integer(), self.integer())

    def request(self, method: str) -> bytes:
        r, caller = self.rng, self.caller()
        if method == "Join":
            return serde.join_request(JoinRequest(self.envelope(), self.integer(), "t", 3))
        if method in ("Heartbeat", "PullTask"):
            encode = serde.heartbeat_request if method == "Heartbeat" else serde.pull_request
            return encode(caller)
        if method == "GetModel":
            return serde.get_model_request(caller, ModelRef(self.integer(), self.text()))
        if method == "ReportFailure":
            failure = TaskFailure(self.key(), r.choice(list(FailureKind)), self.text())
            return serde.report_failure_request(caller, failure)
        if method == "Leave":
            return serde.leave_request(caller, self.text())
        if method == "Status":
            return serde.status_request(StatusQuery(self.envelope(), self.text()))
        parts = self.update_stream()
        return parts[r.randrange(len(parts))]

    def update(self) -> ClientUpdate:
        r = self.rng
        tensors = {
            f"t{i}": torch.arange(r.randrange(40), dtype=torch.float32) * r.uniform(-2, 2)
            for i in range(r.randrange(4))
        }
        return ClientUpdate(
            self.envelope() if r.random() < 0.2 else Envelope(), self.key(), ModelRef(1, "a"),
            r.randrange(5), 5, r.randrange(100), tensors, payload_digest(tensors),
            {"loss": r.random()},
        )  # fmt: skip

    def update_stream(self) -> list[bytes]:
        return list(serde.update_parts(self.caller(), self.update(), LIMITS.chunk_bytes))

    def hostile_header(self) -> bytes:
        r = self.rng
        specs = [
            pb.TensorSpec(
                name=r.choice(("w", "w", "", "b")),
                dtype=r.choice(("float32", "float64", "")),
                shape=[self.integer() for _ in range(r.randrange(4))],
            )
            for _ in range(r.randrange(4))
        ]
        header = pb.UpdateHeader(
            envelope=pb.Envelope(protocol=PROTOCOL_VERSION), key=pb.TaskKey(),
            base=pb.ModelRef(), tensors=specs, total_bytes=self.integer(),
        )  # fmt: skip
        start = pb.UpdateStart(caller=pb.Caller(envelope=pb.Envelope(protocol=1)), header=header)
        return pb.UpdatePart(start=start).SerializeToString()

    # -- damage --------------------------------------------------------------------------
    def mutate(self, data: bytes) -> bytes:
        r, out = self.rng, bytearray(data)
        for _ in range(r.randrange(1, 4)):
            at = r.randrange(len(out) + 1)
            how = r.randrange(7)
            if how == 0 and out:
                out[min(at, len(out) - 1)] ^= 1 << r.randrange(8)
            elif how == 1:
                del out[at:]
            elif how == 2:
                out[at:at] = r.randbytes(r.randrange(1, 9))
            elif how == 3:
                del out[at : at + r.randrange(1, 9)]
            elif how == 4:
                out[at:at] = out[at : at + r.randrange(1, 17)]
            elif how == 5:
                out[at:] = r.choice(self._seen)[r.randrange(8) :]
            elif out:
                out[min(at, len(out) - 1)] = r.choice((0x00, 0x7F, 0x80, 0xFF))
        return bytes(out)

    def damaged_stream(self) -> list[bytes]:
        r, parts = self.rng, self.update_stream()
        fault = r.choice(STREAM_FAULTS)
        head, chunks = parts[0], parts[1:]
        if fault == "swap" and len(chunks) > 1:
            i = r.randrange(len(chunks) - 1)
            chunks[i], chunks[i + 1] = chunks[i + 1], chunks[i]
        elif fault in ("drop", "truncate") and chunks:
            del chunks[r.randrange(len(chunks)) if fault == "drop" else -1]
        elif fault == "repeat" and chunks:
            i = r.randrange(len(chunks))
            chunks.insert(i, chunks[i])
        elif fault in ("oversize", "extra"):
            size = LIMITS.max_chunk_bytes + 1 if fault == "oversize" else 4
            chunk = pb.Chunk(seq=len(chunks) if fault == "extra" else 0, data=bytes(size))
            chunks.insert(len(chunks) if fault == "extra" else 0, _part(chunk))
        elif fault == "digest":
            message = pb.UpdatePart.FromString(head)
            message.start.header.digest = "0" * 64
            head = message.SerializeToString()
        elif fault == "two headers":
            chunks.insert(r.randrange(len(chunks) + 1), head)
        elif fault == "no header":
            head = chunks.pop(0) if chunks else b""
        elif fault == "hostile header":
            head = self.hostile_header()
        elif fault == "mutate part":
            i = r.randrange(len(chunks) + 1)
            if i == 0:
                head = self.mutate(head)
            else:
                chunks[i - 1] = self.mutate(chunks[i - 1])
        return [head, *chunks]

    # -- decoding, as the coordinator does ------------------------------------------------
    def decode(self, data: bytes, method: str) -> None:
        self.tally.messages += 1
        self._outcome(lambda: PARSERS[method](data), data)

    def decode_stream(self, parts: list[bytes]) -> None:
        receiver = UpdateReceiver(LIMITS)
        self.tally.messages += len(parts)

        def push() -> None:
            receiver.start(parts[0])
            for data in parts[1:]:
                receiver.add(data)
            receiver.finish(sender=1)

        self._outcome(push, b"|".join(parts))

    def _outcome(self, work: Callable[[], object], data: bytes) -> None:
        self.tally.cases += 1
        try:
            work()
        except ProtocolError as error:
            self.tally.refused[reason(error)] += 1
        except Exception as error:  # the very thing this harness hunts
            self.tally.uncaught[f"{type(error).__name__}: {error}"[:120]] += 1
            if len(self.tally.first_uncaught) < 5:
                self.tally.first_uncaught.append(data)
        else:
            self.tally.decoded += 1

    def case(self) -> None:
        r = self.rng
        if r.random() < 0.4:
            self.decode_stream(self.damaged_stream())
            return
        method = r.choice(list(PARSERS))
        data = self.request(method)
        if len(self._seen) < 64:
            self._seen.append(data)
        else:
            self._seen[r.randrange(64)] = data
        pick = r.random()
        if pick < 0.6:
            data = self.mutate(data)
        elif pick < 0.7:
            data = r.randbytes(r.randrange(64))
        self.decode(data, method)

    def run(self, messages: int) -> Tally:
        while self.tally.messages < messages:
            self.case()
        return self.tally


def _part(chunk: pb.Chunk) -> bytes:
    return pb.UpdatePart(chunk=chunk).SerializeToString()


def rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def report(tally: Tally, seconds: float, rss: tuple[float, float, float], top: int) -> Table:
    table = Table(title="phalanx.v1 fuzzing: what the coordinator decodes")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("messages decoded (cases)", f"{tally.messages:,} ({tally.cases:,})")
    table.add_row("decoded fine", f"{tally.decoded:,}")
    table.add_row("ProtocolError (refused)", f"{sum(tally.refused.values()):,}")
    for why, count in tally.refused.most_common(top):
        table.add_row(f"  {why}", f"{count:,}")
    rest = sum(tally.refused.values()) - sum(c for _, c in tally.refused.most_common(top))
    table.add_row(f"  other reasons ({max(len(tally.refused) - top, 0)})", f"{rest:,}")
    table.add_row("uncaught exceptions", f"{sum(tally.uncaught.values())}")
    for what, count in tally.uncaught.most_common(5):
        table.add_row(f"  {what}", f"{count}")
    table.add_row(
        "RSS after warm-up / at the end / peak (MiB)", "{:.1f} / {:.1f} / {:.1f}".format(*rss)
    )
    table.add_row(
        "time (s), messages per second", f"{seconds:.1f}, {tally.messages / seconds:,.0f}"
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top", type=int, default=25, help="refusal reasons listed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    Fuzzer(args.seed + 1).run(min(20_000, args.messages))  # warm-up: caches, allocator
    fuzzer = Fuzzer(args.seed)
    before = rss_mib()
    start = time.perf_counter()
    tally = fuzzer.run(args.messages)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Console().print(report(tally, seconds, (before, rss_mib(), peak), args.top))
    for data in tally.first_uncaught:
        print("uncaught on:", data.hex())
    raise SystemExit(1 if tally.uncaught else 0)


if __name__ == "__main__":
    main()
