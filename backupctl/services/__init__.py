"""Service functions over the catalogue, one module per concept.

Each takes a SQLAlchemy ``Session`` and raises backupctl.errors classes; the CLI and the
API call the same functions and only parse input and print or return the results.
"""
