"""Test support code shared by the suites (stand-in servers, builders)."""
