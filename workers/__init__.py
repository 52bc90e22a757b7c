"""Dramatiq wiring: broker (set up first), actors, worker processes, the embedded broker."""

NAMESPACE = "legitsms-orchestrator"  # the Redis keys of the Dramatiq broker start with this
