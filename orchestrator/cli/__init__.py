"""The face: parsing, dispatch, views, progress bar, exit codes; only it imports typer and rich."""
