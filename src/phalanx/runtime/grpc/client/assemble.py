"""A client agent from its settings: the one place its parts are wired together (the CLI
and the tests both call ``build_agent``)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from phalanx.runtime.grpc.assembly import WireLimits
from phalanx.runtime.grpc.client.agent import AgentOptions, ClientAgent
from phalanx.runtime.grpc.client.backoff import Backoff, Retrying
from phalanx.runtime.grpc.client.calls import CoordinatorCalls, Deadlines
from phalanx.runtime.grpc.client.channel import (
    Connection,
    TlsFiles,
    parse_addresses,
    tls_credentials,
)
from phalanx.runtime.grpc.client.faults import build_faults, process_adversary
from phalanx.runtime.grpc.client.session import Identity, Session
from phalanx.runtime.grpc.client.work import Shard


@dataclass(frozen=True)
class ClientSettings:
    """How to reach the coordinator and how to behave: ``server`` is ``HOST:PORT``, or
    several separated by commas (a group of coordinators, one leading); ``backoff_seed`` None
    draws the
    jitter from the OS (clients must not share a schedule); ``faults`` are ``--fault``
    specs; ``inject_faults`` plays the scenario's fault plan and Byzantine role."""

    server: str
    credential: str
    tls: TlsFiles = field(default_factory=TlsFiles)
    server_name: str | None = None
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 5.0
    backoff_seed: int | None = None
    deadlines: Deadlines = field(default_factory=Deadlines)
    limits: WireLimits = field(default_factory=WireLimits)
    options: AgentOptions = field(default_factory=AgentOptions)
    faults: tuple[str, ...] = ()
    inject_faults: bool = False


def build_agent(shard: Shard, settings: ClientSettings) -> ClientAgent:
    """Everything checked (fault specs, the attack, TLS files) before any connection."""
    faults = build_faults(settings.faults, shard.config, inject=settings.inject_faults)
    adversary = None
    if settings.inject_faults:
        adversary = process_adversary(shard.config, shard.manifest, shard.population, shard.client)
    credentials = tls_credentials(settings.tls)
    connection = Connection(
        parse_addresses(settings.server), settings.limits, credentials,
        server_name=settings.server_name,
    )  # fmt: skip
    rng = random.Random(settings.backoff_seed)
    retrying = Retrying(Backoff(settings.backoff_base_s, settings.backoff_cap_s, rng))
    identity = Identity(shard.client, settings.credential, len(shard.data))
    session = Session(
        CoordinatorCalls(connection, settings.deadlines),
        identity,
        retrying,
        give_up_s=settings.options.give_up_s,
    )
    return ClientAgent(shard, session, faults, adversary=adversary, options=settings.options)
