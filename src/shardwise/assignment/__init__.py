"""Assignment: pure lease-assignment decisions (KCL 2.x taker, KCL 3.x deciders)."""
