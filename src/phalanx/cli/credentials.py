"""``phalanx credentials issue|revoke``: the coordinator's credential book.

``issue`` makes a token per client id, records only its salted hash in the book and writes
each token to its own file (``client-<id>.token``, mode 0600) for ``phalanx client
--token-file``; issuing an id again rotates its token. ``revoke`` removes ids; a running
coordinator refuses them from its next join (it re-reads a changed book).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from phalanx.errors import ConfigError
from phalanx.runtime.grpc.credentials import issue_credentials, revoke_credentials, token_files
from phalanx.types import ClientId

credentials_app = typer.Typer(no_args_is_help=True, help="Issue and revoke client credentials.")

MAX_IDS = 1_000_000
Book = Annotated[
    Path, typer.Option("--book", help="The credential book (JSON, hashes only).", metavar="FILE")
]
Ids = Annotated[str, typer.Option("--ids", help="Client ids: ranges and single ids, e.g. 0-19,25.")]


def parse_ids(text: str, *, what: str = "--ids") -> list[ClientId]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``; anything else is a ``ConfigError`` quoting it."""
    ids: set[ClientId] = set()
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise ConfigError(f"{what}: {part!r} is not an id or a range like 0-19") from None
        if first < 0 or last < first or last - first >= MAX_IDS:
            raise ConfigError(f"{what}: {part!r} is not a range of non-negative ids, low-high")
        ids.update(range(first, last + 1))
    return sorted(ids)


@credentials_app.command("issue")
def issue(
    book: Book,
    ids: Ids,
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Where each client's token file goes.")
    ],
) -> None:
    """Issue (or rotate) a token per client id: hashes into the book, tokens into files."""
    tokens = issue_credentials(book, parse_ids(ids))
    written = token_files(out_dir, tokens)
    Console().print(
        f"issued {len(tokens)} credential(s) into {book}; token files: {written[0]}"
        + (f" ... {written[-1]}" if len(written) > 1 else ""),
        highlight=False,
    )


@credentials_app.command("revoke")
def revoke(book: Book, ids: Ids) -> None:
    """Remove client ids from the book (a running coordinator refuses them from its next
    join)."""
    asked = parse_ids(ids)
    gone = revoke_credentials(book, asked)
    missing = sorted(set(asked) - set(gone))
    note = f"; not in the book: {missing}" if missing else ""
    Console().print(f"revoked {len(gone)} credential(s) in {book}{note}", highlight=False)
