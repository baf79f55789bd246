"""Corrupting one attribute of a stored lease item behind the store's back (SQLite or DynamoDB), as an operator's
typo, a foreign writer or a bad migration would."""

from __future__ import annotations

import sqlite3
from typing import Any

from shardwise.leases.store import LeaseStore

__all__ = ["corrupt"]


def corrupt(store: LeaseStore, key: str, sqlite_set: tuple[str, object], dynamodb_set: dict[str, Any] | None) -> None:
    """Overwrite one attribute of the stored item behind the store's back (``None`` value: remove it)."""
    from shardwise.backends.aws.leases import DynamoDBLeaseStore
    from shardwise.backends.sqlite.leases import SQLiteLeaseStore

    if isinstance(store, SQLiteLeaseStore):
        column, value = sqlite_set
        with sqlite3.connect(store.path) as conn:
            conn.execute(
                f"UPDATE shardwise_leases SET {column} = ? WHERE table_name = ? AND lease_key = ?",
                (value, store.table_name, key),
            )
        return
    assert isinstance(store, DynamoDBLeaseStore)
    assert dynamodb_set is not None
    item = store.client.get_item(TableName=store.table_name, Key={"leaseKey": {"S": key}}, ConsistentRead=True)["Item"]
    for name, value in dynamodb_set.items():
        if value is None:
            item.pop(name, None)
        else:
            item[name] = value
    store.client.put_item(TableName=store.table_name, Item=item)
