"""The client process of a networked deployment (``phalanx client``), one module a job:

- ``channel``: the channel to the coordinator (plaintext or TLS, mutual TLS), remade after a
  transport failure; ``calls``: the seven ``phalanx.v1`` calls over it, errors translated;
- ``backoff``: capped exponential backoff with full jitter, for transport failures only;
- ``session``: join, and every call as the joined session (joins again after a coordinator
  restart, once); ``heartbeat``: the heartbeat thread and the cancelled tasks;
- ``models``: the global models, fetched once per version; ``pace``: measured speed for the
  partial-work decision, and a task's time-to-live;
- ``app`` and ``work``: what this client trains (a built-in workload's shard, or a user's
  app), as the simulation trains it; ``faults``: the faults it plays, through the client
  package's wrappers, acted out for real by ``acts`` (SIGKILL, silence, a cut push);
  ``agent``: the loop that ties them together; ``assemble``: wiring from settings.

The round logic is not here: the coordinator's engine decides; a client trains and replies.
"""

from phalanx.runtime.grpc.client.agent import AgentOptions, AgentStats, ClientAgent
from phalanx.runtime.grpc.client.app import ClientApp, load_app
from phalanx.runtime.grpc.client.backoff import Backoff, Retrying, TransportError
from phalanx.runtime.grpc.client.calls import CoordinatorCalls, Deadlines
from phalanx.runtime.grpc.client.channel import Connection, TlsFiles, open_channel, tls_credentials
from phalanx.runtime.grpc.client.faults import Faults, build_faults, parse_fault, process_adversary
from phalanx.runtime.grpc.client.session import Identity, Session
from phalanx.runtime.grpc.client.work import Shard, app_shard, builtin_shard

__all__ = [
    "AgentOptions",
    "AgentStats",
    "Backoff",
    "ClientAgent",
    "ClientApp",
    "Connection",
    "CoordinatorCalls",
    "Deadlines",
    "Faults",
    "Identity",
    "Retrying",
    "Session",
    "Shard",
    "TlsFiles",
    "TransportError",
    "app_shard",
    "build_faults",
    "builtin_shard",
    "load_app",
    "open_channel",
    "parse_fault",
    "process_adversary",
    "tls_credentials",
]
