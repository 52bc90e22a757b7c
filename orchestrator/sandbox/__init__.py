"""A faithful simulator of the LegitSMS V2 API, for demos, dry runs and tests; it stands apart."""
