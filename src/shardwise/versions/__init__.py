"""Which protocol generation the fleet runs: the ``Migration3.0`` state and its state machine (KCL 2.x <-> 3.x),
and KIP-584-style feature versions with their store."""
