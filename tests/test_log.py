"""The local log (nbchat.core.log): what a reply leaves in SQLite, where, when, and what a broken
database does (warns once, never breaks a chat). The conftest points NBCHAT_LOG at a temp file."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import sqlite3
import sys
import threading
import time

import pytest
from IPython.core.interactiveshell import InteractiveShell

import nbchat
from nbchat.core import log as nblog
from nbchat.core.errors import ProviderError
from nbchat.core.types import ImagePart, ToolCall
from nbchat.notebook.magics import ChatMagics


def png(color: str = "red") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


_real_insert = nblog.Log._insert


def db_path() -> str:
    return os.environ["NBCHAT_LOG"]


def rows(sql: str = "SELECT * FROM replies", params=()) -> list[sqlite3.Row]:
    nblog.current().flush()
    conn = sqlite3.connect(db_path())
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_a_reply_is_logged_once_with_what_was_sent_and_received(fake):
    image_out = ImagePart(png("blue"))
    fake.enqueue("Hel", "lo", tool_calls=[ToolCall("get", {"city": "Paris"}, "c1")],
                 images=[image_out])
    reply = nbchat.chat("Describe this.", model="fake:echo", images=[png("red")],
                        temperature=0.5, max_tokens=40, system="Be brief.",
                        base_url="http://ada:s3cret@proxy.test:8080/v1")
    (row,) = rows()
    assert row["id"] == reply.log_id and row["session"] == nblog.SESSION
    assert (row["provider"], row["model"]) == ("fake", "fake:echo")
    assert row["endpoint"] == "http://proxy.test:8080/v1"  # no user, no password
    messages = json.loads(row["messages"])
    assert [m["role"] for m in messages] == ["system", "user"]
    text, image = messages[1]["content"]
    assert text == {"type": "text", "text": "Describe this."}
    assert image["type"] == "image" and image["mime"] == "image/png"
    assert json.loads(row["options"]) == {"temperature": 0.5, "max_tokens": 40}
    assert row["text"] == "Hello" and row["finish_reason"] == "stop"
    assert json.loads(row["tool_calls"]) == [{"id": "c1", "name": "get",
                                              "arguments": {"city": "Paris"}}]
    assert (row["input_tokens"], row["output_tokens"]) == (2, 2)
    assert row["time_to_first_token"] == reply.time_to_first_token
    assert row["duration"] == reply.duration > 0
    assert row["request_hash"] == reply.request_hash and len(reply.request_hash) == 64
    # both images are stored as bytes, once each
    blobs = {r["sha256"]: bytes(r["data"]) for r in rows("SELECT * FROM blobs")}
    assert blobs[image["sha256"]] == png("red")
    assert image_out.data in blobs.values() and len(blobs) == 2
    events = json.loads(row["events"])
    assert events[0] == 2 and events[1][0] == "image" and events[2][0] == "tool"
    assert events[3] == ["done", "stop", 2, 2]


def test_the_key_never_reaches_the_log(fake):
    key = "sk-livekey0123456789abcdef"
    fake.enqueue(error=ProviderError(f"bad request for key {key}", status=400))
    with pytest.raises(ProviderError):
        nbchat.chat("hello", model="fake:echo", api_key=key)
    fake.enqueue("fine")
    nbchat.chat("hello again", model="fake:echo", api_key=key)
    nblog.current().close()
    raw = b"".join(open(p, "rb").read() for p in (db_path(), db_path() + "-wal")
                   if os.path.exists(p))
    assert key.encode() not in raw and b"livekey" not in raw
    errors = [r["error"] for r in rows() if r["error"]]
    assert errors and "***" in errors[0]


def test_written_by_the_writer_thread_after_the_reply_not_during_it(fake, monkeypatch):
    written: list[str] = []
    release = threading.Event()
    insert = nblog.Log._insert

    def slow_insert(self, conn, records):
        written.append(threading.current_thread().name)
        release.wait(10)  # the chat must not wait for this
        insert(self, conn, records)

    monkeypatch.setattr(nblog.Log, "_insert", slow_insert)
    fake.enqueue(*[f"t{i} " for i in range(500)])
    reply = nbchat.chat("go", model="fake:echo")
    assert reply.text.startswith("t0 t1") and not release.is_set()  # returned before the write
    release.set()
    nblog.current().flush()
    assert written == ["nbchat-log"]  # one write for 500 chunks, on the writer thread
    (row,) = rows()
    assert json.loads(row["events"]) == [500, ["done", "stop", 1, 500]]


def test_a_lookup_waits_for_the_writer_only_for_its_own_request(fake, monkeypatch):
    # nbchat.map looks up every row in the log (resume) while earlier rows are being written
    entered, release = threading.Event(), threading.Event()
    insert = nblog.Log._insert

    def stuck_insert(self, conn, records):
        entered.set()
        release.wait(10)
        insert(self, conn, records)

    monkeypatch.setattr(nblog.Log, "_insert", stuck_insert)
    reply = nbchat.chat("being written", model="fake:echo")
    assert entered.wait(5)  # the writer is inside its write, holding the database
    lg = nblog.current()
    found: list = []
    other = threading.Thread(target=lambda: found.append(lg.find("another request")))
    other.start()
    other.join(5)
    alive = other.is_alive()
    release.set()
    other.join(5)
    assert not alive and found == [[]]  # answered while the write was still going on
    [logged] = lg.find(reply.request_hash)  # its own request: waits for the write, then sees it
    assert logged.id == reply.log_id


def test_replies_queued_while_the_writer_is_busy_are_written_in_one_transaction(fake,
                                                                              monkeypatch):
    entered, release = threading.Event(), threading.Event()
    batches: list[int] = []
    insert, write = nblog.Log._insert, nblog.Log._write

    def stuck_insert(self, conn, records):
        entered.set()
        release.wait(10)
        insert(self, conn, records)

    def counted_write(self, items):
        batches.append(len(items))
        write(self, items)

    monkeypatch.setattr(nblog.Log, "_insert", stuck_insert)
    monkeypatch.setattr(nblog.Log, "_write", counted_write)
    replies = [nbchat.chat("first", model="fake:echo")]
    assert entered.wait(5)
    replies += [nbchat.chat(f"then {i}", model="fake:echo") for i in range(5)]
    release.set()
    nblog.current().flush()
    assert batches == [1, 5]  # one commit for the five that waited, not five
    assert sorted(r["id"] for r in rows()) == sorted(r.log_id for r in replies)


def test_log_off_writes_nothing(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("NBCHAT_LOG", "off")
    reply = nbchat.chat("hi", model="fake:echo")
    assert reply.text == "hi" and reply.log_id is None
    assert reply.provenance["request_hash"] == reply.request_hash  # provenance still says what
    assert nblog.current() is None
    assert nbchat.log() is not None and len(nbchat.log()) == 0
    assert not list(tmp_path.glob("*.db"))


def test_default_location_is_the_user_data_dir(fake, monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv("NBCHAT_LOG")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    expected = os.path.join(platformdirs.user_data_dir("nbchat", appauthor=False), "log.db")
    assert nblog.log_path() == expected and expected.startswith(str(tmp_path))
    nbchat.chat("hi", model="fake:echo")
    nblog.current().flush()
    assert os.path.getsize(expected) > 0


def test_nbchat_log_path_moves_the_log(fake, monkeypatch, tmp_path):
    other = tmp_path / "sub" / "other.db"
    monkeypatch.setenv("NBCHAT_LOG", str(other))
    nbchat.chat("hi", model="fake:echo")
    assert len(nbchat.log()) == 1 and other.exists()


def test_corrupt_database_warns_once_and_never_breaks_a_chat(fake):
    with open(db_path(), "wb") as fh:
        fh.write(b"this is not a database" * 100)
    with pytest.warns(nblog.LogWarning, match="cannot be used") as caught:
        first = nbchat.chat("one", model="fake:echo")
        second = nbchat.chat("two", model="fake:echo")
    assert (first.text, second.text) == ("one", "two")
    assert first.log_id is None and second.log_id is None
    assert len([w for w in caught if issubclass(w.category, nblog.LogWarning)]) == 1
    assert "NBCHAT_LOG" in str(caught[0].message)  # says what to do
    with pytest.raises(nblog.LogUnusable):
        nbchat.log()


def test_locked_database_loses_one_entry_with_a_warning_then_recovers(fake, monkeypatch):
    monkeypatch.setattr(nblog, "BUSY_TIMEOUT", 0.2)
    nbchat.chat("first", model="fake:echo")
    nblog.current().flush()
    holder = sqlite3.connect(db_path(), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.warns(nblog.LogWarning, match="locked"):
            reply = nbchat.chat("second", model="fake:echo")
            nblog.current().flush()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert reply.text == "second"
    nbchat.chat("third", model="fake:echo")
    assert list(nbchat.log()["prompt"]) == ["third", "first"]


def test_migrations_are_versioned_and_run_once(fake, monkeypatch):
    path = db_path()
    # a database of schema version 1 (before reasoning was kept), with one reply in it
    monkeypatch.setattr(nblog, "MIGRATIONS", nblog.MIGRATIONS[:1])
    monkeypatch.setattr(nblog, "_COLUMNS", nblog._COLUMNS[:-1])
    monkeypatch.setattr(nblog.Log, "_insert", _insert_without_reasoning)
    nbchat.chat("before", model="fake:echo")
    nblog.current().close()
    conn = sqlite3.connect(db_path())
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    monkeypatch.undo()  # this nbchat again (and the environment before the test)
    monkeypatch.setenv("NBCHAT_LOG", path)
    # this nbchat upgrades it in place, rows kept, and writes the new column
    nblog._current = None
    fake.enqueue("answer", reasoning=["thought"])
    nbchat.chat("after", model="fake:echo")
    assert list(nbchat.log()["prompt"]) == ["after", "before"]
    conn = sqlite3.connect(db_path())
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(nblog.MIGRATIONS) == 2
    assert [r[0] for r in conn.execute("SELECT reasoning FROM replies ORDER BY rowid")] == [
        None, "thought"]
    conn.close()


def _insert_without_reasoning(self, conn, records):
    """What nbchat wrote at schema version 1."""
    for record in records:
        record.reply.reasoning = ""
    real = conn.execute
    width = len(nblog._COLUMNS) + 1  # the values of one reply, reasoning last

    class NoReasoning:
        def execute(self, sql, params=()):
            if sql.startswith("INSERT INTO replies"):
                params = [v for i, v in enumerate(params) if i % width != width - 1]
            return real(sql, params)

        def executemany(self, *args):
            return conn.executemany(*args)

    _real_insert(self, NoReasoning(), records)


def test_a_database_from_a_newer_nbchat_is_left_alone(fake):
    conn = sqlite3.connect(db_path())
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.warns(nblog.LogWarning, match="newer nbchat"):
        assert nbchat.chat("hi", model="fake:echo").text == "hi"
    conn = sqlite3.connect(db_path())
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
    assert not conn.execute("SELECT name FROM sqlite_master").fetchall()
    conn.close()


def test_nbchat_log_filters_and_returns_a_dataframe(fake, monkeypatch):
    nbchat.chat("Tell me about cats", model="fake:echo")
    nbchat.chat("Tell me about dogs", model="fake:other")
    fake.enqueue("The answer mentions HAMSTERS.")
    nbchat.chat("pets?", model="fake:echo")
    df = nbchat.log()
    assert list(df["prompt"]) == ["pets?", "Tell me about dogs", "Tell me about cats"]
    assert {"model", "provider", "text", "created", "input_tokens", "cost"} <= set(df.columns)
    assert list(nbchat.log(model="fake:other")["prompt"]) == ["Tell me about dogs"]
    assert list(nbchat.log(provider="fake", n=1)["prompt"]) == ["pets?"]
    assert list(nbchat.log(text="CATS")["prompt"]) == ["Tell me about cats"]  # prompt, any case
    assert list(nbchat.log(text="hamsters")["prompt"]) == ["pets?"]  # or reply
    assert len(nbchat.log(text="100%_")) == 0  # LIKE wildcards are literal
    assert len(nbchat.log(since=dt.timedelta(minutes=5))) == 3
    assert len(nbchat.log(since=dt.datetime.now() + dt.timedelta(minutes=1))) == 0
    assert len(nbchat.log(since=dt.date.today().isoformat())) == 3
    monkeypatch.setitem(sys.modules, "pandas", None)  # pandas not installed: a list
    entries = nbchat.log(n=2)
    assert [type(e) for e in entries] == [nblog.LogEntry] * 2
    assert entries[0].created.tzinfo is not None


def test_nbchat_log_model_filter_takes_aliases(fake, monkeypatch):
    from nbchat.core import registry

    monkeypatch.setitem(registry.ALIASES, "pet", "fake:other")
    nbchat.chat("a", model="fake:echo")
    nbchat.chat("b", model="pet")
    assert list(nbchat.log(model="pet")["model"]) == ["fake:other"]


def test_bad_filters_say_what_to_give(fake):
    from nbchat.core.errors import BadOption

    with pytest.raises(BadOption, match="ISO 8601"):
        nbchat.log(since="yesterday-ish")
    with pytest.raises(BadOption, match="positive"):
        nbchat.log(0)


def test_concurrent_replies_are_all_logged(fake):
    for i in range(12):
        fake.enqueue(f"reply {i}", " more", delay=0.01)
    replies = nbchat.batch([f"prompt {i}" for i in range(12)], model="fake:echo", concurrency=4)
    assert fake.max_active > 1
    logged = nbchat.log(n=50)
    assert sorted(logged["id"]) == sorted(r.log_id for r in replies)
    assert sorted(logged["prompt"]) == sorted(f"prompt {i}" for i in range(12))


# ---- through IPython ---------------------------------------------------------------------


@pytest.fixture
def shell():
    ip = InteractiveShell.instance()
    magics = ChatMagics(shell=ip)
    ip.register_magics(magics)
    shown: list[dict] = []
    publish = ip.display_pub.publish

    def record(data, metadata=None, **kw):
        shown.append({"data": data, "metadata": metadata or {}})

    ip.display_pub.publish = record
    yield ip, shown
    ip.display_pub.publish = publish
    ip.user_ns.pop("__session__", None)
    if magics in ip.configurables:
        ip.configurables.remove(magics)


def test_notebook_and_cell_are_logged_when_known(shell, fake):
    ip, _ = shell
    ip.user_ns["__session__"] = "work/analysis.ipynb"
    result = ip.run_cell("%%chat -m fake:echo\nhello from a cell", cell_id="cell-7f3a")
    assert result.error_in_exec is None
    entry = nbchat.log(n=1).iloc[0]
    assert (entry["notebook"], entry["cell"]) == ("work/analysis.ipynb", "cell-7f3a")
    ip.run_cell("import nbchat\nnbchat.chat('plain call', model='fake:echo')", cell_id="c2")
    entry = nbchat.log(n=1).iloc[0]
    assert (entry["prompt"], entry["cell"]) == ("plain call", "c2")


def test_chat_log_magic_shows_an_escaped_table(shell, fake):
    ip, shown = shell
    fake.enqueue("<img src=x onerror=alert(1)> reply")
    nbchat.chat("first <b>bold</b>", model="fake:echo")
    nbchat.chat("second about weather", model="fake:other")
    shown.clear()
    assert ip.run_cell("%chat_log").error_in_exec is None
    html = shown[-1]["data"]["text/html"]
    assert "<img" not in html and "<b>bold" not in html and "&lt;img" in html
    assert html.index("second about weather") < html.index("first")
    shown.clear()
    ip.run_cell("%chat_log -n 5 -m fake:echo")
    assert "weather" not in shown[-1]["data"]["text/html"]
    shown.clear()
    ip.run_cell("%chat_log weather")
    text = shown[-1]["data"]["text/plain"]
    assert "second about weather" in text and "first" not in text
    assert ip.run_cell("%chat_log -n 0").error_in_exec is not None


def test_chat_log_magic_when_the_log_is_off(shell, monkeypatch):
    ip, shown = shell
    monkeypatch.setenv("NBCHAT_LOG", "off")
    ip.run_cell("%chat_log")
    assert "NBCHAT_LOG=off" in shown[-1]["data"]["text/plain"]


def test_a_reply_after_a_quiet_spell_is_written_at_once(fake, monkeypatch):
    # the writer lingers for more replies only while they come fast (nbchat.map): a lone
    # reply is on disk at once, so a process killed right after it keeps it
    monkeypatch.setattr(nblog, "LINGER", 30.0)
    reply = nbchat.chat("alone", model="fake:echo")
    deadline = time.monotonic() + 5
    found: list = []
    while not found and time.monotonic() < deadline:
        conn = sqlite3.connect(db_path())
        try:
            found = conn.execute("SELECT id FROM replies").fetchall()
        except sqlite3.OperationalError:  # not created yet
            pass
        finally:
            conn.close()
        time.sleep(0.02)
    assert found == [(reply.log_id,)]
