"""The state `restart` hands to the next daemon is written all at once or not at all (no cloud needed).

The daemon used to write it to one fixed temporary path, `saved-state.tmp`, then rename it: whatever sat at
that path (a directory left there, as the failed-save test made one; a second writer) made every later save
fail with `IsADirectoryError: .../saved-state.tmp`. Each save now has a temporary file of its own.
"""

import os
import pickle
import stat
import threading
import time

import pytest

from localcloud import config, serve


class Listener:
    """Stands for an IMDS listener: the tokens it hands to a save, and those it gets back from a restore."""

    def __init__(self, tokens=None):
        self.tokens = dict(tokens or {})
        self.imported = None

    def export_tokens(self):
        return dict(self.tokens)

    def import_tokens(self, tokens):
        self.imported = dict(tokens)


def test_a_directory_at_the_old_temporary_path_does_not_stop_a_save(tmp_path):
    path = tmp_path / "saved-state.pickle"
    (tmp_path / "saved-state.tmp").mkdir()  # what made every save fail
    listeners = {config.NETWORK_NAME: Listener({"t1": ("172.31.0.4", 100.0)}),
                 "localcloud-eu-west-1": Listener({"t2": ("172.31.0.4", 200.0)})}
    serve.dump_state(path, listeners)
    state = pickle.loads(path.read_bytes())
    assert state["tokens"] == {"t1": ("172.31.0.4", 100.0)}  # the default network's, in the format before regions
    assert state["network_tokens"] == {"localcloud-eu-west-1": {"t2": ("172.31.0.4", 200.0)}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # IMDS tokens inside: never readable by others, not even briefly
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved-state.pickle", "saved-state.tmp"]


def test_restore_gives_each_network_its_tokens(tmp_path):
    path = tmp_path / "saved-state.pickle"
    serve.dump_state(path, {config.NETWORK_NAME: Listener({"t1": ("172.31.0.4", 100.0)}),
                            "localcloud-eu-west-1": Listener({"t2": ("172.31.0.4", 200.0)})})
    listeners = {config.NETWORK_NAME: Listener(), "localcloud-eu-west-1": Listener()}
    serve.restore_state(path, listeners)
    assert listeners[config.NETWORK_NAME].imported == {"t1": ("172.31.0.4", 100.0)}
    assert listeners["localcloud-eu-west-1"].imported == {"t2": ("172.31.0.4", 200.0)}
    assert not path.exists()
    # A state saved by a daemon from before regions had networks: its tokens are the default network's.
    path.write_bytes(pickle.dumps({"services": {}, "tokens": {"t3": ("172.31.0.5", 300.0)}}))
    listeners = {config.NETWORK_NAME: Listener()}
    serve.restore_state(path, listeners)
    assert listeners[config.NETWORK_NAME].imported == {"t3": ("172.31.0.5", 300.0)}


def test_concurrent_saves_each_land_whole(tmp_path):
    """Two writers at once (two daemons, or two saves) never mix their data nor trip over each other's file."""
    path = tmp_path / "saved-state.pickle"
    errors = []

    def writer(mark):
        def write(handle):
            for dummy in range(50):
                handle.write(mark * 1000)
                handle.flush()
                time.sleep(0.0005)
        try:
            for dummy in range(5):
                serve.write_atomically(path, write)
                data = path.read_bytes()
                assert len(data) == 50000 and len(set(data)) == 1, "a mixed or partial file"
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(mark,)) for mark in (b"a", b"b", b"c", b"d")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["saved-state.pickle"]


def test_a_failed_save_leaves_the_previous_state_and_no_temporary_file(tmp_path):
    path = tmp_path / "saved-state.pickle"
    path.write_bytes(b"previous")

    def write(handle):
        handle.write(b"half of it")
        raise pickle.PicklingError("cannot save this")

    with pytest.raises(pickle.PicklingError):
        serve.write_atomically(path, write)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["saved-state.pickle"]
    # Something that is not a file at the path itself (the failed-save test's blocker): the save fails, cleanly.
    path.unlink()
    path.mkdir()
    with pytest.raises(IsADirectoryError):
        serve.write_atomically(path, lambda handle: handle.write(b"state"))
    assert [p.name for p in tmp_path.iterdir()] == ["saved-state.pickle"] and path.is_dir()
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
