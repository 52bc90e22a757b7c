"""The work on one slot: runtime, nudges, country choice, polling, purchase, settle, sweep."""
