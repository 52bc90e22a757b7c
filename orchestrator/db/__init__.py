"""The database: engine, SQLModel tables, store (every state change), reads, migrations."""
