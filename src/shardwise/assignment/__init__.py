"""Assignment: pure lease-assignment decisions — the KCL 2.x taker (``taker``); for KCL 3.x, the settings and
values (``utilization``), the leader's liveness rules (``liveness``), the deciders' shared bookkeeping
(``projection``) and the two deciders (``variance``, ``lease_count``)."""
