"""``python -m orchestrator``: the same as the ``orchestrator`` command."""

from orchestrator.cli.app import main

main()
