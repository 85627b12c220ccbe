"""``phalanx status HOST:PORT``: a running coordinator's members, their liveness and the
round in flight, from its ``Status`` call.

One call with a deadline; a coordinator that cannot be reached is a ``RuntimeBackendError``
(exit 6) naming the address, a refusal keeps its own error (an operator credential not
accepted: ``AuthError``, exit 11). TLS options as for ``phalanx client``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.table import Table

from phalanx.core.messages import Envelope
from phalanx.errors import RuntimeBackendError
from phalanx.runtime.grpc import serde
from phalanx.runtime.grpc.credentials import read_token
from phalanx.runtime.grpc.errors import error_of_rpc, is_transport
from phalanx.runtime.grpc.session import CoordinatorStatus, StatusQuery
from phalanx.runtime.grpc.tls import channel_credentials


def fetch_status(
    target: str,
    query: StatusQuery,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    timeout_s: float = 10.0,
) -> CoordinatorStatus:
    """One ``Status`` call to ``target``; errors translated (see the module docstring)."""
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            serde.method_path("Status")
        )
        try:
            reply: bytes = call(serde.status_request(query), timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            if code is not None and is_transport(code):
                details = exc.details() if isinstance(exc, grpc.Call) else ""
                raise RuntimeBackendError(
                    f"no answer from the coordinator at {target} within {timeout_s:g} s "
                    f"({code.name}: {details})"
                ) from None
            raise error_of_rpc(exc) from None
    return serde.parse_status_reply(reply)


def status_line(status: CoordinatorStatus) -> str:
    live = sum(member.live for member in status.members)
    flight = "none" if status.round_in_flight is None else str(status.round_in_flight)
    return (
        f"run {status.envelope.run_id or '-'}: round in flight {flight}, "
        f"{status.rounds_committed} committed, {status.rounds_failed} failed; "
        f"{live} of {len(status.members)} members live"
    )


def status_table(status: CoordinatorStatus) -> Table:
    table = Table()
    table.add_column("client", justify="right")
    table.add_column("live")
    table.add_column("last heartbeat", justify="right")
    for member in sorted(status.members, key=lambda m: m.client):
        age = member.heartbeat_age_s
        table.add_row(str(member.client), "yes" if member.live else "no",
                      "never" if age is None else f"{age:.1f} s ago")  # fmt: skip
    return table


def status(
    target: Annotated[str, typer.Argument(metavar="HOST:PORT", help="The coordinator.")],
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="The CA that signed the server's certificate.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="A client certificate (mutual TLS).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its key.")] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="An operator credential, if required.")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")] = 10.0,
) -> None:
    """Show a running coordinator's members, their liveness and the round in flight."""
    if tls_ca is None and (tls_cert or tls_key):
        raise typer.BadParameter("--tls-cert and --tls-key need --tls-ca", param_hint="--tls-ca")
    credentials = channel_credentials(tls_ca, tls_cert, tls_key) if tls_ca else None
    token = read_token(token_file) if token_file else ""
    found = fetch_status(
        target, StatusQuery(Envelope(), token), credentials=credentials, timeout_s=timeout
    )
    console = Console()
    console.print(status_line(found), highlight=False, soft_wrap=True)
    console.print(status_table(found))
