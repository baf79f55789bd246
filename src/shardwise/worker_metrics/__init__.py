"""Worker metrics (KCL 3.x): CPU sources, the collector, the reporter that writes this worker's metrics item,
and the throughput EMA of the leases it holds."""
