"""Coordination: worker loops, leader election, migration and feature versions."""
