"""Offline analysis of snapshots: containers, merged views, change reports."""
