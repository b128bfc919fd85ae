"""Tollgate policy engine: YAML policy schema and the routing decision. Pure: no I/O, no gateway imports."""
