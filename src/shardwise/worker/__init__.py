"""The worker runtime: its loops, the dispatcher of shard consumers, the coordination generations it switches
between, and the core that wires them."""
