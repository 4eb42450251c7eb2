"""The o2f command line (typer): thin commands over forensics.api."""
