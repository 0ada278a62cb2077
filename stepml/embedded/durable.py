"""The local AWS's state on disk: crash-safe, written as it changes, checked when it is opened.

One SQLite database (``local.db``) holds the S3 object index, the DynamoDB items and the execution
records; object contents are files named by their SHA-256 under ``blobs/``. SQLite commits atomically
(WAL, ``synchronous=FULL``: a commit is on disk when it returns), and a blob is written to a temporary
file, fsynced and renamed into place, so a kill or a full disk leaves either the old state or the new,
never half of one. A blob is checked against its hash when it is read back: a damaged file is named and
left out, never served as the object.

The store knows nothing of moto: the local AWS service writes through it as requests change its state
(:mod:`stepml.embedded.recording`) and loads it back into moto when it starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, key TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    content_type TEXT, metadata TEXT NOT NULL, last_modified REAL NOT NULL,
    PRIMARY KEY (bucket, key));
CREATE TABLE IF NOT EXISTS items (
    table_name TEXT NOT NULL, item_key TEXT NOT NULL, item TEXT NOT NULL, expires REAL,
    PRIMARY KEY (table_name, item_key));
CREATE TABLE IF NOT EXISTS blobs (
    sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS executions (
    name TEXT PRIMARY KEY, execution_arn TEXT NOT NULL, state_machine_arn TEXT NOT NULL,
    status TEXT NOT NULL, start_date REAL NOT NULL, record TEXT NOT NULL);
"""
TABLES = ("objects", "items", "executions", "blobs")
# Columns added after the first schema: (table, column, declaration). A database of an earlier stepml gets them
# when it is opened; its rows hold NULL there.
ADDED_COLUMNS = (("objects", "etag", "TEXT"),)
# Object contents are hashed and copied in pieces of this size: memory does not grow with an object.
CHUNK = 1 << 20


class Readable(Protocol):
    """What an object's content is streamed from: a file object, or anything with ``read(size)``."""

    def read(self, size: int, /) -> bytes: ...


class LocalStateError(Exception):
    """Base of the local AWS's state errors; the message names the file and what to do."""


class StateWriteError(LocalStateError):
    """A change could not reach the disk (full disk, read-only file system); nothing half-written is kept."""


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    sha256: str
    size: int
    content_type: str | None
    metadata: dict[str, str]
    last_modified: float
    etag: str | None = None  # S3's ETag, unquoted (NULL for objects an earlier stepml stored)


def item_key(key: dict[str, Any]) -> str:
    """A DynamoDB key (attribute name → typed value) as a stable text, the row's primary key."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once the directory holding it is synced.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_dir(path.parent)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise StateWriteError(f"cannot write {path}: {error.strerror or error}") from error


class DurableStore:
    """S3 objects, DynamoDB items and execution records under ``root``; safe to share between threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.database = root / "local.db"
        self.blobs = root / "blobs"
        self.notes: list[str] = []
        self._lock = threading.RLock()
        self._writing: set[Path] = set()  # contents being written (not yet hashed): never garbage
        root.mkdir(parents=True, exist_ok=True)
        self._db = self._open_checked()

    # -- opening and recovery ---------------------------------------------------------------------------
    def _connect(self, path: Path) -> sqlite3.Connection:
        connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit has reached the disk when it returns (NORMAL could lose the last ones on power loss).
        connection.execute("PRAGMA synchronous=FULL")
        return connection

    def _open_checked(self) -> sqlite3.Connection:
        problem: str | None = None
        if self.database.exists() and self.database.stat().st_size == 0:
            # SQLite never leaves an empty file once the schema is written: something else emptied it.
            problem = "the file is empty"
        elif self.database.exists():
            try:
                probe = self._connect(self.database)
                verdict = probe.execute("PRAGMA quick_check").fetchone()[0]
                _create_schema(probe)
                if verdict == "ok":
                    return probe
                problem = f"integrity check: {verdict}"
                probe.close()
            except sqlite3.DatabaseError as error:
                problem = str(error)
        if problem is None:
            connection = self._connect(self.database)
            _create_schema(connection)
            return connection
        return self._recover(problem)

    def _recover(self, problem: str) -> sqlite3.Connection:
        """Move a damaged database aside, copy out of it what still reads, and say what was lost."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        damaged = self.database.with_name(f"{self.database.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.database}{suffix}")
            if source.exists():
                os.replace(source, Path(f"{damaged}{suffix}"))
        connection = self._connect(self.database)
        _create_schema(connection)
        recovered: dict[str, int] = {}
        lost: list[str] = []
        try:
            old = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
        except sqlite3.DatabaseError as error:
            old, lost = None, [f"everything ({error})"]
        for table in TABLES if old is not None else ():
            assert old is not None
            try:
                cursor = old.execute(f"SELECT * FROM {table}")
                rows = cursor.fetchall()
            except sqlite3.DatabaseError as error:
                lost.append(f"{table} ({error})")
                continue
            if rows:  # by column name: the damaged file may be of an earlier schema
                columns = ",".join(d[0] for d in cursor.description)
                marks = ",".join("?" * len(rows[0]))
                connection.executemany(f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})", rows)
            recovered[table] = len(rows)
        if old is not None:
            old.close()
        counts = ", ".join(f"{n} {t}" for t, n in recovered.items()) or "nothing"
        self.notes.append(
            f"{self.database} was damaged ({problem}); it was moved to {damaged.name}. Recovered {counts}"
            + (f"; lost: {', '.join(lost)}" if lost else "")
            + "."
        )
        return connection

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as error:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise StateWriteError(f"cannot write {self.database}: {error}") from error
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise

    # -- S3 ---------------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        """Where the content with this SHA-256 is (one file per distinct content)."""
        return self.blobs / sha256[:2] / sha256

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        etag: str | None = None,
    ) -> StoredObject:
        """Keep an object's current content; the blob is on disk before the index points at it."""
        return self.put_object_from(io.BytesIO(data), bucket, key, content_type, metadata, etag)

    def put_object_from(
        self,
        source: Readable,
        bucket: str,
        key: str,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        etag: str | None = None,
    ) -> StoredObject:
        """Keep the content read from ``source`` (to its end) as the object's: hashed and written in pieces,
        so memory does not grow with the object, and stored once whatever the number of objects holding it."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        temporary = self.blobs / f".incoming.{uuid.uuid4().hex}.tmp"
        with self._lock:
            self._writing.add(temporary)
        try:
            return self._keep(temporary, source, bucket, key, content_type, metadata, etag)
        finally:
            with self._lock:
                self._writing.discard(temporary)

    def _keep(
        self,
        temporary: Path,
        source: Readable,
        bucket: str,
        key: str,
        content_type: str | None,
        metadata: dict[str, str] | None,
        etag: str | None,
    ) -> StoredObject:
        sha256, size = self._write(temporary, iter(lambda: source.read(CHUNK), b""))
        stored = StoredObject(bucket, key, sha256, size, content_type, metadata or {}, time.time(), etag)
        # Under the store's lock from blob to row, so a garbage collection never sees the blob unreferenced.
        with self._lock:
            path = self._place(temporary, sha256)
            with self._transaction() as db:
                _index(db, stored)
                self._stamp(db, sha256, path)
        return stored

    def _write(self, temporary: Path, pieces: Iterator[bytes]) -> tuple[str, int]:
        """Write the pieces to ``temporary``, fsynced; their SHA-256 and size."""
        digest, size = hashlib.sha256(), 0
        try:
            with open(temporary, "wb") as handle:
                for chunk in pieces:
                    digest.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise StateWriteError(f"cannot write {temporary}: {error.strerror or error}") from error
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return digest.hexdigest(), size

    def _place(self, temporary: Path, sha256: str) -> Path:
        """Move a written content into its blob (under the store's lock); its path."""
        path = self.blob_path(sha256)
        try:
            if self._unchanged(sha256, path):
                temporary.unlink()  # the content is stored (and checked) already: one copy of it
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(temporary, path)
                _fsync_dir(path.parent)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise StateWriteError(f"cannot write {path}: {error.strerror or error}") from error
        return path

    @contextlib.contextmanager
    def held_blob(self, pieces: Iterator[bytes]) -> Iterator[tuple[Path, int]]:
        """Write the pieces as a blob (no object points at it yet) and yield its path and size; no garbage
        collection removes it while the context lasts (the caller gives it to an object meanwhile)."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        temporary = self.blobs / f".incoming.{uuid.uuid4().hex}.tmp"
        with self._lock:
            self._writing.add(temporary)
        try:
            sha256, size = self._write(temporary, pieces)
            with self._lock:
                path = self._place(temporary, sha256)
                with self._transaction() as db:
                    self._stamp(db, sha256, path)
                self._writing.add(path)
        finally:
            with self._lock:
                self._writing.discard(temporary)
        try:
            yield path, size
        finally:
            with self._lock:
                self._writing.discard(path)

    def put_object_stored(
        self,
        sha256: str,
        bucket: str,
        key: str,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        etag: str | None = None,
    ) -> StoredObject | None:
        """Keep an object whose content is a blob stored already (a copy of a stored object): only its row is
        written. None when that blob is not there as it was written (the caller streams the content then)."""
        path = self.blob_path(sha256)
        with self._lock:
            if not self._unchanged(sha256, path):
                return None
            stored = StoredObject(
                bucket, key, sha256, path.stat().st_size, content_type, metadata or {}, time.time(), etag
            )
            with self._transaction() as db:
                _index(db, stored)
        return stored

    def _stamped(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT sha256 FROM blobs")}

    def _unchanged(self, sha256: str, path: Path) -> bool:
        """Whether the blob is there as it was when written or last hashed (size and modification time)."""
        try:
            stat = path.stat()
        except OSError:
            return False
        with self._lock:
            noted = self._db.execute("SELECT size, mtime_ns FROM blobs WHERE sha256 = ?", (sha256,)).fetchone()
        return bool(noted == (stat.st_size, stat.st_mtime_ns))

    def _stamp(self, db: sqlite3.Connection, sha256: str, path: Path) -> None:
        """Note the blob's size and modification time as checked: it is opened again without a full read
        as long as both are unchanged."""
        stat = path.stat()
        db.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?, ?)", (sha256, stat.st_size, stat.st_mtime_ns))

    def delete_object(self, bucket: str, key: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket, key))

    def objects(self, bucket: str | None = None) -> list[StoredObject]:
        columns = "bucket, key, sha256, size, content_type, metadata, last_modified, etag"
        with self._lock:
            query = f"SELECT {columns} FROM objects" + (" WHERE bucket = ?" if bucket else "") + " ORDER BY bucket, key"
            rows = self._db.execute(query, (bucket,) if bucket else ()).fetchall()
        return [StoredObject(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7]) for r in rows]

    def read_object(self, stored: StoredObject) -> bytes | None:
        """The object's content, or None (with a note) when its blob is missing or damaged."""
        path = self.checked_blob(stored, full=True)
        return path.read_bytes() if path is not None else None

    def checked_blob(self, stored: StoredObject, full: bool = False) -> Path | None:
        """The file holding the object's content, or None (with a note, the file moved aside) when it is
        missing or damaged.

        The content is hashed (in pieces) when ``full`` or when the file's size or modification time differ
        from those noted when it was written or last hashed; otherwise the file is taken as checked, so that
        opening a state directory reads none of its objects. (A change that keeps both, which no write through
        the file system does, shows only on a ``full`` check.)
        """
        path = self.blob_path(stored.sha256)
        try:
            stat = path.stat()
        except OSError as error:
            self.notes.append(f"s3://{stored.bucket}/{stored.key}: its content {path} is missing ({error.strerror}).")
            return None
        if not full and stat.st_size == stored.size and self._unchanged(stored.sha256, path):
            return path
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
        except OSError as error:
            self.notes.append(f"s3://{stored.bucket}/{stored.key}: its content {path} cannot be read ({error}).")
            return None
        if digest.hexdigest() != stored.sha256:
            self.notes.append(
                f"s3://{stored.bucket}/{stored.key}: its content {path} is damaged ({stat.st_size} bytes, "
                f"expected {stored.size} with SHA-256 {stored.sha256[:12]}…); the object is left out."
            )
            with contextlib.suppress(OSError):
                os.replace(path, path.with_name(f"{path.name}.damaged"))
            return None
        with contextlib.suppress(StateWriteError), self._transaction() as db:  # read-only disk: checked again next time
            self._stamp(db, stored.sha256, path)
        return path

    def release(self, names: set[str], in_use: Callable[[], set[str]] = set) -> None:
        """Delete those of the named blobs no object points at nor ``in_use()`` names (a completed or aborted
        upload's parts), without a whole collection."""
        asked = sorted(names)  # at most S3's 10,000 parts: within SQLite's 32,766 bound parameters (3.32+)
        marks = ",".join("?" * len(asked))
        with self._lock:
            rows = {row[0] for row in self._db.execute(f"SELECT sha256 FROM objects WHERE sha256 IN ({marks})", asked)}
            gone = [name for name in names - rows - in_use() if self.blob_path(name) not in self._writing]
            for name in gone:
                self.blob_path(name).unlink(missing_ok=True)
            with contextlib.suppress(StateWriteError), self._transaction() as db:
                db.executemany("DELETE FROM blobs WHERE sha256 = ?", [(name,) for name in gone])

    def collect_garbage(self, in_use: Callable[[], set[str]] = set) -> int:
        """Delete the blobs no object points at any more, nor ``in_use()`` names (contents the caller still
        reads); the bytes freed."""
        freed = 0
        with self._lock:  # no object write is between its blob and its row meanwhile
            wanted = {row[0] for row in self._db.execute("SELECT DISTINCT sha256 FROM objects")} | in_use()
            # blobs/xx/<sha256> and what a kill left while writing one (blobs/.incoming.*.tmp)
            found = [*self.blobs.glob("*/*"), *self.blobs.glob(".incoming.*")] if self.blobs.is_dir() else []
            for path in found:
                if path.name not in wanted and path not in self._writing:
                    with contextlib.suppress(OSError):
                        freed += path.stat().st_size
                        path.unlink()
            with contextlib.suppress(StateWriteError), self._transaction() as db:
                gone = [(name,) for name in self._stamped() - wanted]
                db.executemany("DELETE FROM blobs WHERE sha256 = ?", gone)
        return freed

    # -- DynamoDB ---------------------------------------------------------------------------------------
    def put_items(
        self, table: str, changes: list[tuple[str, dict[str, Any] | None]], ttl_attribute: str | None
    ) -> None:
        """Apply ``(item_key, item or None for deleted)`` changes to ``table`` in one transaction."""
        with self._transaction() as db:
            for key, item in changes:
                if item is None:
                    db.execute("DELETE FROM items WHERE table_name = ? AND item_key = ?", (table, key))
                    continue
                expires = _ttl_of(item, ttl_attribute)
                db.execute("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?)", (table, key, json.dumps(item), expires))

    def items(self, table: str) -> list[dict[str, Any]]:
        """The table's items, without those past their TTL (DynamoDB deletes them)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT item FROM items WHERE table_name = ? AND (expires IS NULL OR expires >= ?)",
                (table, time.time()),
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def drop_expired_items(self) -> int:
        with self._transaction() as db:
            return int(
                db.execute("DELETE FROM items WHERE expires IS NOT NULL AND expires < ?", (time.time(),)).rowcount
            )

    # -- executions -------------------------------------------------------------------------------------
    def put_execution(self, record: dict[str, Any], key: str | None = None) -> None:
        """Keep an execution's description (and history, under ``events``); dates as epoch seconds. ``key``
        (default: its name) is what :meth:`execution` finds it by."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO executions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key or record["name"],
                    record["executionArn"],
                    record["stateMachineArn"],
                    record["status"],
                    float(record["startDate"]),
                    json.dumps(record),
                ),
            )

    def execution(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM executions WHERE name = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def executions(self, state_machine_arn: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Stored execution records, newest first."""
        clauses, values = [], []
        if state_machine_arn:
            clauses.append("state_machine_arn = ?")
            values.append(state_machine_arn)
        if status:
            clauses.append("status = ?")
            values.append(status)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(f"SELECT record FROM executions{where} ORDER BY start_date DESC", values).fetchall()
        return [json.loads(row[0]) for row in rows]

    # -- size -------------------------------------------------------------------------------------------
    def usage(self) -> dict[str, int]:
        """Bytes on disk: the database and the object contents."""
        database = sum(
            Path(f"{self.database}{s}").stat().st_size for s in ("", "-wal") if Path(f"{self.database}{s}").exists()
        )
        blobs = sum(p.stat().st_size for p in self.blobs.glob("*/*")) if self.blobs.is_dir() else 0
        return {"database": database, "objects": blobs}


def _index(db: sqlite3.Connection, stored: StoredObject) -> None:
    db.execute(
        "INSERT OR REPLACE INTO objects (bucket, key, sha256, size, content_type, metadata, last_modified, etag)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            stored.bucket, stored.key, stored.sha256, stored.size, stored.content_type,
            json.dumps(stored.metadata), stored.last_modified, stored.etag,
        ),
    )  # fmt: skip


def _create_schema(connection: sqlite3.Connection) -> None:
    connection.executescript(SCHEMA)
    for table, column, declaration in ADDED_COLUMNS:
        present = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def _ttl_of(item: dict[str, Any], ttl_attribute: str | None) -> float | None:
    """The item's TTL (epoch seconds) when the table has one and the item carries a number there."""
    if not ttl_attribute:
        return None
    value = item.get(ttl_attribute, {}).get("N")
    try:
        return float(value) if value is not None else None
    except ValueError:  # DynamoDB ignores a TTL attribute that is not a number; so do we
        return None
