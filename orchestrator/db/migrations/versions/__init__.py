"""One module per schema revision, applied in order by ``orchestrator.db.migrate``."""
