"""Tollgate gateway: the service package, and the only one that does I/O (HTTP, SQL, Redis,
backends)."""

__version__ = "0.1.0"
