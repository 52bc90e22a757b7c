"""Dramatiq wiring: the broker (set up first), the actors, and the worker process runner."""

NAMESPACE = "legitsms-orchestrator"  # the Redis keys of the Dramatiq broker start with this
