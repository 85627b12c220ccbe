"""The few etcd v3 calls failover needs, over etcd's JSON gateway (``etcd3gw``).

etcd 3.4 serves its gateway under ``/v3/``; the path is given explicitly instead of
discovered (one request fewer per client, and no guess on a member that is down). A call
goes to the member that answered last and, if that one fails (refused, timed out, no
quorum behind it), to the next, each within ``timeout_s``; when none answers the call
raises ``EtcdUnavailableError``. All calls block: async code runs them on a thread.

Keys and values travel base64-encoded in the gateway's JSON; revisions come back as
decimal strings. Only these shapes are used: a range read of one key, lease grant,
keep-alive and revoke, and transactions of compares and puts/deletes.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from phalanx.errors import ConfigError, RuntimeBackendError

log = logging.getLogger("phalanx.ha.etcd")
API_PATH = "/v3/"
T = TypeVar("T")


class EtcdUnavailableError(RuntimeBackendError):
    """No etcd member answered (or none with a quorum behind it)."""


@dataclass(frozen=True)
class Target:
    """Where the coordination service is: etcd members and the key prefix of this group."""

    endpoints: tuple[str, ...]
    prefix: str

    @classmethod
    def parse(cls, url: str) -> Target:
        """``etcd://HOST:PORT[,HOST:PORT...]/PREFIX``."""
        parts = urlsplit(url)
        endpoints = tuple(e for e in parts.netloc.split(",") if e)
        prefix = parts.path.strip("/")
        if parts.scheme != "etcd" or not endpoints or not prefix:
            raise ConfigError(
                f"--ha wants etcd://HOST:PORT[,HOST:PORT...]/PREFIX (e.g. "
                f"etcd://127.0.0.1:2379/phalanx/demo); got {url!r}"
            )
        for endpoint in endpoints:
            host, sep, port = endpoint.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(f"--ha: etcd member {endpoint!r} is not HOST:PORT in {url!r}")
        return cls(endpoints, prefix)

    def key(self, name: str) -> str:
        return f"/{self.prefix}/{name}"


@dataclass(frozen=True)
class KeyValue:
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store's revision after the transaction (header)
    responses: list[dict[str, Any]]


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def put_op(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def delete_op(key: str) -> dict[str, Any]:
    return {"request_delete_range": {"key": b64(key)}}


def range_op(key: str) -> dict[str, Any]:
    return {"request_range": {"key": b64(key)}}


def compare(key: str, target: str, value: int | bytes) -> dict[str, Any]:
    """``target`` is CREATE (create_revision), MOD (mod_revision), VERSION or VALUE."""
    field = {"CREATE": "create_revision", "MOD": "mod_revision", "VERSION": "version"}
    body: dict[str, Any] = {"key": b64(key), "result": "EQUAL", "target": target}
    if target == "VALUE":
        body["value"] = b64(value if isinstance(value, bytes) else str(value))
    else:
        body[field[target]] = str(value)
    return body


def kv_of(item: dict[str, Any]) -> KeyValue:
    return KeyValue(
        base64.b64decode(item.get("value", "")), int(item.get("create_revision", 0)),
        int(item.get("mod_revision", 0)), int(item.get("lease", 0)),
    )  # fmt: skip


class Etcd:
    """A client over several members (see the module docstring)."""

    def __init__(self, endpoints: Sequence[str], *, timeout_s: float = 1.0) -> None:
        self._clients = [self._client(e, timeout_s) for e in endpoints]
        self.endpoints = tuple(endpoints)
        self._current = 0

    @staticmethod
    def _client(endpoint: str, timeout_s: float) -> Etcd3Client:
        host, _, port = endpoint.rpartition(":")
        return Etcd3Client(host=host, port=int(port), timeout=timeout_s, api_path=API_PATH)

    def _call(self, what: str, fn: Callable[[Etcd3Client], T]) -> T:
        errors = []
        for step in range(len(self._clients)):
            index = (self._current + step) % len(self._clients)
            try:
                result = fn(self._clients[index])
            except Etcd3Exception as exc:  # refused, timed out, or the member has no quorum
                errors.append(f"{self.endpoints[index]}: {type(exc).__name__} {exc}"[:200])
                continue
            self._current = index
            return result
        raise EtcdUnavailableError(f"etcd {what}: no member answered ({'; '.join(errors)})")

    def _post(self, what: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        def post(client: Etcd3Client) -> dict[str, Any]:
            reply: dict[str, Any] = client.post(client.get_url(path), json=body)
            return reply

        return self._call(what, post)

    def get(self, key: str) -> KeyValue | None:
        reply = self._post(f"read of {key}", "/kv/range", {"key": b64(key)})
        kvs = reply.get("kvs") or []
        return kv_of(kvs[0]) if kvs else None

    def grant(self, ttl_s: int) -> int:
        reply = self._post("lease grant", "/lease/grant", {"TTL": str(ttl_s), "ID": "0"})
        return int(reply["ID"])

    def keepalive(self, lease: int) -> int:
        """The lease's TTL after this renewal; 0 or less: the lease is gone."""
        reply = self._post("lease keep-alive", "/lease/keepalive", {"ID": str(lease)})
        return int(reply.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        self._post("lease revoke", "/lease/revoke", {"ID": str(lease)})

    def txn(
        self,
        compares: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
    ) -> TxnResult:
        body = {"compare": compares, "success": success, "failure": failure or []}
        reply = self._post("transaction", "/kv/txn", body)
        return TxnResult(
            bool(reply.get("succeeded", False)), int(reply["header"]["revision"]),
            list(reply.get("responses", [])),
        )  # fmt: skip
