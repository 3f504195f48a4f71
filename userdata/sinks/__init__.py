"""Sinks: where the index goes after a change (output.csv; later the database mirror)."""
