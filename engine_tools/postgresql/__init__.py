"""PostgreSQL engine tool: physical backups, WAL archiving and point-in-time restore (see tool.py)."""

from engine_tools.postgresql.tool import PostgresTool

__all__ = ["PostgresTool"]
