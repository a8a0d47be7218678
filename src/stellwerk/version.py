"""The release of this code, for the Python client's User-Agent as much as for `/metrics`: the
client sits below the package's root (which re-exports it), so the version lives here."""

__version__ = "0.1.0"
