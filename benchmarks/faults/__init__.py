"""Longer fault-injection runs than CI affords, on servers of their own (see tests/faults/)."""
