"""The `complai` command line (typer + rich)."""
