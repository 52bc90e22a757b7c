"""Dramatiq wiring: the broker (set up first), the actors, and the worker process runner."""
