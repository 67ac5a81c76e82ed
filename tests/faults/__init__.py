"""Fault-injection suite: private Redis and PostgreSQL servers, real workers, injected faults."""
