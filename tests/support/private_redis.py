"""A private, throw-away redis-server for fault tests: started on a free port, killed, paused
and restarted by the test itself (the machine's shared Redis is never touched). The one
implementation is the fault suite's (``bench.fault_stack``)."""

from bench.fault_stack import PrivateRedis

__all__ = ["PrivateRedis"]
