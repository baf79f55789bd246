"""The embedded backend: one SQLite file holds leases, coordinator items and local streams."""
