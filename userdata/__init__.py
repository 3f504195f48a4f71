"""userdata: an in-memory index of per-user CSV and PNG objects, served over HTTP."""

__version__ = "0.1.0"
