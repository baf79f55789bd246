"""Table administration on the embedded backend, behind the seam's :class:`~shardwise.backends.port.TableAdmin`.

Every lease table is a partition of one SQLite database file, and the owner index is part of the schema: there
is no table status other than "exists", and KCL 3.x keeps no resources of its own here that a rollback would
delete (``Capabilities.kcl_3x_resources`` is false), so the deletions refuse. Reads never create the database
file: an operator pointing ``--db`` at the wrong path must not leave an empty database behind.
"""

from __future__ import annotations

from shardwise.backends.sqlite.connection import SQLiteDatabase
from shardwise.backends.sqlite.leases import SQLiteLeaseStore
from shardwise.errors import ConfigurationError, ResourceNotFoundError

__all__ = ["SQLiteTableAdmin"]


class SQLiteTableAdmin:
    """Status of the lease tables (and their owner index) in one database file."""

    def __init__(self, database: SQLiteDatabase, database_file: str | None = None) -> None:
        self._db = database
        self._file = database_file if database_file is not None else str(database.path)

    def __repr__(self) -> str:
        return f"SQLiteTableAdmin({self._file!r})"

    @property
    def database_file(self) -> str | None:
        return self._file

    def database_exists(self) -> bool:
        return self._db.path.is_file()

    def _store(self, table_name: str) -> SQLiteLeaseStore:
        return SQLiteLeaseStore(self._db.path, table_name, database=self._db)

    def table_status(self, table_name: str) -> str | None:
        """``ACTIVE`` for an existing lease table, else ``None`` (also when there is no database file)."""
        if not self.database_exists():
            return None
        return "ACTIVE" if self._store(table_name).table_exists() else None

    def delete_table(self, table_name: str) -> None:
        raise ConfigurationError(
            f"the embedded (SQLite) backend does not delete table {table_name!r}: its tables are partitions of "
            f"{self._file}, and KCL 3.x keeps no table of its own there"
        )

    def owner_index_status(self, lease_table_name: str) -> str | None:
        """``ACTIVE`` (the embedded owner index is part of the schema) while the lease table exists."""
        if self.table_status(lease_table_name) is None:
            raise ResourceNotFoundError(f"lease table {lease_table_name!r} does not exist in {self._file}")
        return self._store(lease_table_name).owner_index_status()

    def delete_owner_index(self, lease_table_name: str) -> None:
        raise ConfigurationError(
            f"the embedded (SQLite) backend does not delete the owner index of lease table {lease_table_name!r}: "
            "it is part of the schema"
        )
