"""The credential book: tokens issued once and stored only as salted scrypt hashes; verify
accepts exactly a client's own token and refuses everything else with one message; rotation,
revocation (seen by a loaded book without a restart); clear errors for bad files; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phalanx.cli.app import app
from phalanx.cli.credentials import parse_ids
from phalanx.errors import AuthError, ConfigError
from phalanx.runtime.grpc.credentials import (
    CredentialBook,
    Scrypt,
    issue_credentials,
    read_token,
    revoke_credentials,
)

FAST = Scrypt(n=16)  # the same code path at a test's cost


def _book(tmp_path: Path, ids: range = range(3)) -> tuple[Path, dict[int, str]]:
    path = tmp_path / "book.json"
    return path, issue_credentials(path, ids, kdf=FAST)


def test_each_client_is_accepted_with_its_own_token_only(tmp_path: Path) -> None:
    path, tokens = _book(tmp_path)
    book = CredentialBook.load(path)
    for client, token in tokens.items():
        book.verify(client, token)
    refusals = [(0, tokens[1]), (1, ""), (2, tokens[2] + "x"), (7, tokens[0]), (-1, "x"),
                (0, tokens[0] + "x" * 10_000)]  # fmt: skip
    messages = set()
    for client, token in refusals:
        with pytest.raises(AuthError) as info:
            book.verify(client, token)
        messages.add(str(info.value).replace(f"client {client}:", "client N:"))
    assert messages == {"client N: credential not accepted"}  # unknown id == wrong token


def test_the_book_holds_salted_hashes_and_no_token(tmp_path: Path) -> None:
    path, tokens = _book(tmp_path)
    text = path.read_text()
    assert all(token not in text for token in tokens.values())
    entries = json.loads(text)["clients"]
    assert len({e["salt"] for e in entries.values()}) == 3  # a salt per entry
    assert entries["0"]["kdf"] == {"name": "scrypt", "n": 16, "r": 8, "p": 1, "dklen": 32}
    assert path.stat().st_mode & 0o777 == 0o600


def test_rotation_and_revocation_reach_a_loaded_book(tmp_path: Path) -> None:
    path, tokens = _book(tmp_path)
    book = CredentialBook.load(path)
    (rotated,) = issue_credentials(path, [1], kdf=FAST).values()
    assert revoke_credentials(path, [2, 9]) == [2]
    book.verify(1, rotated)
    book.verify(0, tokens[0])  # the others are untouched
    for client, token in ((1, tokens[1]), (2, tokens[2])):
        with pytest.raises(AuthError):
            book.verify(client, token)
    assert book.clients == {0, 1}


def test_a_book_damaged_while_loaded_keeps_the_last_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, tokens = _book(tmp_path)
    book = CredentialBook.load(path)
    path.write_text("{")
    book.verify(0, tokens[0])
    assert "keeping the credential book loaded before" in caplog.text


def _entry(*, n: int = 16, hash_bytes: int = 32) -> str:
    kdf = {"name": "scrypt", "n": n, "r": 8, "p": 1, "dklen": 32}
    entry = {"salt": "ab" * 16, "hash": "cd" * hash_bytes, "kdf": kdf}
    return json.dumps({"format": "phalanx-credentials", "version": 1, "clients": {"0": entry}})


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no credential book at"),
        ("{", "is not a phalanx credential book"),
        ('{"format": "other", "version": 1, "clients": {}}', "is not a phalanx credential"),
        ('{"format": "phalanx-credentials", "version": 1, "clients": {"0": {}}}', "salt"),
        (_entry(n=1000), "must be a power of two"),
        (_entry(hash_bytes=16), "a hash of 16 bytes; dklen says 32"),
    ],
)
def test_a_missing_or_malformed_book_is_a_config_error(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "book.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=problem) as info:
        CredentialBook.load(path)
    assert str(path) in str(info.value)


def test_ids_parse_from_ranges_and_refuse_nonsense() -> None:
    assert parse_ids("0-3,7, 5") == [0, 1, 2, 3, 5, 7]
    for bad in ("", "a", "3-1", "-2", "1-x"):
        with pytest.raises(ConfigError, match="--ids"):
            parse_ids(bad)


def test_the_cli_issues_token_files_and_revokes(tmp_path: Path) -> None:
    book, out = tmp_path / "book.json", tmp_path / "tokens"
    runner = CliRunner(env={"COLUMNS": "400"})
    result = runner.invoke(
        app, ["credentials", "issue", "--book", str(book), "--ids", "0-2", "--out-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["client-0.token", "client-1.token", "client-2.token"]
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    loaded = CredentialBook.load(book)
    loaded.verify(1, read_token(out / "client-1.token"))
    result = runner.invoke(app, ["credentials", "revoke", "--book", str(book), "--ids", "1,5"])
    assert result.exit_code == 0 and "not in the book: [5]" in result.output
    with pytest.raises(AuthError):
        loaded.verify(1, read_token(out / "client-1.token"))


def test_a_token_file_must_hold_a_token(tmp_path: Path) -> None:
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="holds no token"):
        read_token(empty)
    with pytest.raises(ConfigError, match="cannot read the token file"):
        read_token(tmp_path / "absent.token")
