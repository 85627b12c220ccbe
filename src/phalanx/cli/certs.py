"""``phalanx certs make``: a CA, a server certificate and client certificates for a local
TLS deployment (``runtime/grpc/certs.py``).

Then: ``phalanx serve ... --tls-cert DIR/server.pem --tls-key DIR/server.key`` (and
``--tls-client-ca DIR/ca.pem`` for mutual TLS); ``phalanx client ... --tls-ca DIR/ca.pem``
(and ``--tls-cert DIR/client-<id>.pem --tls-key DIR/client-<id>.key``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from phalanx.cli.credentials import parse_ids

certs_app = typer.Typer(no_args_is_help=True, help="Certificates for a local TLS deployment.")


@certs_app.command("make")
def make(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where the PEM files go.")],
    hosts: Annotated[
        str,
        typer.Option("--hosts", help="The coordinator's names and addresses, comma-separated."),
    ] = "localhost,127.0.0.1",
    clients: Annotated[
        str, typer.Option("--clients", help="Client ids to make certificates for, e.g. 0-19.")
    ] = "",
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 365,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a CA already in --out-dir.")
    ] = False,
) -> None:
    """Make ca.pem, server.pem/.key and client-<id>.pem/.key (keys mode 0600)."""
    from phalanx.runtime.grpc.certs import make_local_pki  # cryptography: a server extra

    names = [h.strip() for h in hosts.split(",") if h.strip()]
    ids = parse_ids(clients, what="--clients") if clients.strip() else []
    made = make_local_pki(out_dir, hosts=names, clients=ids, days=days, replace=replace)
    Console().print(
        f"CA {made.ca}; server certificate {made.server_cert} for {', '.join(names)}; "
        f"{len(made.clients)} client certificate(s) in {out_dir}",
        highlight=False,
    )
