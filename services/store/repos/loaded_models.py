"""The loaded_models table (migration 5): models added at run time by ModelService.LoadModel."""

from __future__ import annotations

from typing import Any

import peewee as pw

from services.store.db import write_txn
from services.store.records import AlreadyExists, LoadedModelRecord

_COLUMNS = ("id", "name", "format", "source", "provider", "kind", "base_url", "upstream_model", "description",
            "context_length", "created_by", "created_at")


def _record(row: tuple[Any, ...]) -> LoadedModelRecord:
    values = dict(zip(_COLUMNS, row[:-1]))
    return LoadedModelRecord(**{**values, "context_length": int(values["context_length"] or 0),
                                "created_at": float(values["created_at"])}, has_key=bool(row[-1]))


def insert(db: pw.Database, record: LoadedModelRecord, sealed: str) -> LoadedModelRecord:
    p = db.param
    with write_txn(db):
        taken = db.execute_sql(f"SELECT 1 FROM loaded_models WHERE name = {p}", (record.name,)).fetchone()
        if taken:
            raise AlreadyExists(f"a model named {record.name!r} is already loaded", reason="MODEL_ALREADY_LOADED",
                                metadata={"name": record.name})
        db.execute_sql(
            f"INSERT INTO loaded_models ({', '.join(_COLUMNS)}, sealed) VALUES ({', '.join([p] * (len(_COLUMNS) + 1))})",
            tuple(getattr(record, c) for c in _COLUMNS) + (sealed,),
        )
    return record


def list_all(db: pw.Database) -> list[LoadedModelRecord]:
    rows = db.execute_sql(f"SELECT {', '.join(_COLUMNS)}, sealed <> '' FROM loaded_models ORDER BY created_at, id")
    return [_record(r) for r in rows.fetchall()]


def delete_by_name(db: pw.Database, name: str) -> LoadedModelRecord | None:
    p = db.param
    with write_txn(db):
        row = db.execute_sql(f"SELECT {', '.join(_COLUMNS)}, sealed <> '' FROM loaded_models WHERE name = {p}",
                             (name,)).fetchone()
        if row is None:
            return None
        db.execute_sql(f"DELETE FROM loaded_models WHERE name = {p}", (name,))
    return _record(row)


def get_sealed(db: pw.Database, model_id: str) -> str | None:
    row = db.execute_sql(f"SELECT sealed FROM loaded_models WHERE id = {db.param}", (model_id,)).fetchone()
    return row[0] if row else None
