"""Job files and what is done with them: schema, submit, export, report, scheduler."""
