"""Who leads the fleet: the 2.x deterministic leader (Java's ``Random(1947)`` shuffle) and the 3.x leader lock
(item-compatible with the DynamoDB lock client)."""
