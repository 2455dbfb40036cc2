"""Database access (SQLite, opened read-only)."""

import sqlite3
from pathlib import Path

DB_PATH = Path(__file__).resolve().parent.parent / "db" / "command_center.db"


def connect(path=DB_PATH):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def asset(conn, tag):
    row = conn.execute("SELECT * FROM assets WHERE tag = ?", (tag,)).fetchone()
    if row is None:
        raise KeyError(f"unknown asset {tag}")
    return row


def readings_on(conn, tag, day):
    """Readings of one asset on one UTC day ('YYYY-MM-DD'), oldest first."""
    return conn.execute(
        "SELECT r.* FROM readings r JOIN assets a ON a.id = r.asset_id "
        "WHERE a.tag = ? AND date(r.taken_at) = ? ORDER BY r.taken_at",
        (tag, day),
    ).fetchall()
