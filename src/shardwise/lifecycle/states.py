"""The shard-consumer state machine (KCL's ``ConsumerStates``), as a pure transition function.

::

    WAITING_ON_PARENT_SHARDS ─parents done─▶ INITIALIZING ─initialized─▶ PROCESSING ─requested─▶ SHUTDOWN_REQUESTED
          │                                      │                        │                          │
          │ lease lost or shutdown requested:    │                        │ shard end / lease lost   │ notified
          │ the processor was never initialized  │                        ▼                          │ (or lease lost)
          └──────────────────────────────────────┴──────────┐        SHUTTING_DOWN ◀────────────────┘
                                                            ▼             │ shard_ended / lease_lost told
                                                   SHUTDOWN_COMPLETE ◀────┘

A shutdown before the processor was initialized never calls the processor: there is nothing to tell it.
"""

from __future__ import annotations

import enum

__all__ = ["ConsumerEvent", "ConsumerState", "ShutdownReason", "transition"]


class ConsumerState(enum.Enum):
    WAITING_ON_PARENT_SHARDS = "WAITING_ON_PARENT_SHARDS"
    INITIALIZING = "INITIALIZING"
    PROCESSING = "PROCESSING"
    SHUTDOWN_REQUESTED = "SHUTDOWN_REQUESTED"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    SHUTDOWN_COMPLETE = "SHUTDOWN_COMPLETE"


class ShutdownReason(enum.Enum):
    SHARD_END = "SHARD_END"
    LEASE_LOST = "LEASE_LOST"
    REQUESTED = "REQUESTED"


class ConsumerEvent(enum.Enum):
    PARENTS_DONE = "PARENTS_DONE"
    INITIALIZED = "INITIALIZED"
    SHARD_ENDED = "SHARD_ENDED"
    LEASE_LOST = "LEASE_LOST"
    SHUTDOWN_REQUESTED = "SHUTDOWN_REQUESTED"
    SHUTDOWN_NOTIFIED = "SHUTDOWN_NOTIFIED"
    SHUTDOWN_DONE = "SHUTDOWN_DONE"


_S = ConsumerState
_E = ConsumerEvent

_TRANSITIONS: dict[tuple[ConsumerState, ConsumerEvent], ConsumerState] = {
    (_S.WAITING_ON_PARENT_SHARDS, _E.PARENTS_DONE): _S.INITIALIZING,
    (_S.INITIALIZING, _E.INITIALIZED): _S.PROCESSING,
    (_S.INITIALIZING, _E.SHARD_ENDED): _S.SHUTTING_DOWN,  # the lease was already at SHARD_END
    (_S.PROCESSING, _E.SHARD_ENDED): _S.SHUTTING_DOWN,
    (_S.PROCESSING, _E.SHUTDOWN_REQUESTED): _S.SHUTDOWN_REQUESTED,
    (_S.SHUTDOWN_REQUESTED, _E.SHUTDOWN_NOTIFIED): _S.SHUTTING_DOWN,
    (_S.SHUTTING_DOWN, _E.SHUTDOWN_DONE): _S.SHUTDOWN_COMPLETE,
}
for _state in (_S.WAITING_ON_PARENT_SHARDS, _S.INITIALIZING):
    # Nothing to notify yet: leave at once.
    _TRANSITIONS[(_state, _E.LEASE_LOST)] = _S.SHUTDOWN_COMPLETE
    _TRANSITIONS[(_state, _E.SHUTDOWN_REQUESTED)] = _S.SHUTDOWN_COMPLETE
for _state in (_S.PROCESSING, _S.SHUTDOWN_REQUESTED):
    _TRANSITIONS[(_state, _E.LEASE_LOST)] = _S.SHUTTING_DOWN
_TRANSITIONS[(_S.SHUTTING_DOWN, _E.LEASE_LOST)] = _S.SHUTTING_DOWN
_TRANSITIONS[(_S.SHUTTING_DOWN, _E.SHUTDOWN_REQUESTED)] = _S.SHUTTING_DOWN
_TRANSITIONS[(_S.SHUTDOWN_REQUESTED, _E.SHUTDOWN_REQUESTED)] = _S.SHUTDOWN_REQUESTED
_TRANSITIONS[(_S.SHUTDOWN_COMPLETE, _E.LEASE_LOST)] = _S.SHUTDOWN_COMPLETE
_TRANSITIONS[(_S.SHUTDOWN_COMPLETE, _E.SHUTDOWN_REQUESTED)] = _S.SHUTDOWN_COMPLETE


def transition(state: ConsumerState, event: ConsumerEvent) -> ConsumerState:
    """The next state, or ``ValueError`` for an event the state does not accept."""
    try:
        return _TRANSITIONS[(state, event)]
    except KeyError:
        raise ValueError(f"shard consumer in {state.value} cannot handle {event.value}") from None
