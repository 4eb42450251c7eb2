"""Overlay semantics as pure functions over records: no I/O here."""
