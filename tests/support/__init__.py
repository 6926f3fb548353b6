"""Helpers for the tests (not tests themselves): the redis-server starter."""
