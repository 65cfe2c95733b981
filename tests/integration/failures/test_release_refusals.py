"""Releases the cluster must not take: truncated, corrupt, another ERTS. Each is refused before any change.
The three deploys run at once (each fails in its checks, before any change): one row each."""

import gzip
import pathlib
import shutil
import tarfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from failures_lib import ROWS, Row, snapshot


def _corrupt(data):
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 512]) + data[middle + 512:]


def truncated(src, dst):
    """The first half of the tarball: gzip ends early."""
    dst.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2])


def corrupt(src, dst):
    """Same length, bytes in the middle overwritten: the gzip CRC or the deflate stream fails."""
    dst.write_bytes(_corrupt(src.read_bytes()))


def other_erts(releases, tmp_path):
    """A release directory naming ERTS 99.0 (deploy's ERTS check); returns (path, the ERTS the workers run)."""
    src = tmp_path / "erts"
    with tarfile.open(releases["v2"]) as tar:
        tar.extractall(src, filter="data")  # nosec - our own build
    shutil.move(str(src / "releases" / "2.0.0"), str(src / "releases" / "2.0.1"))
    rel = src / "releases" / "2.0.1" / "hello_cluster.rel"
    text = rel.read_text()
    erts = text.split("{erts,", 1)[1].split("}", 1)[0].strip().strip('"')
    rel.write_text(text.replace('"2.0.0"}', '"2.0.1"}', 1).replace('"%s"' % erts, '"99.0"', 1))
    return str(src), erts


def test_releases_the_cluster_must_not_take(cluster, releases, poller, row, tmp_path):
    """release tarball corrupt (deploy)"""
    bad = {}
    for kind, make in (("corrupt", corrupt), ("truncated", truncated)):
        bad[kind] = tmp_path / ("hello_cluster-2.0.0-%s.tar.gz" % kind)
        make(pathlib.Path(releases["v2"]), bad[kind])
        with pytest.raises((EOFError, OSError, gzip.BadGzipFile, zlib.error)):
            # The fault is real: the gzip stream does not read to its end (tarfile stops at the archive's end marker,
            # before the CRC, so a corruption inside a member can pass it unseen).
            with gzip.open(bad[kind]) as stream:
                while stream.read(1 << 20):
                    pass
    erts_dir, erts = other_erts(releases, tmp_path)
    cases = [("corrupt", str(bad["corrupt"])), ("truncated", str(bad["truncated"])), ("erts", erts_dir)]
    rows = {"corrupt": row, "truncated": Row("release tarball truncated (deploy)", cluster, poller),
            "erts": Row("a release naming another ERTS than the workers run (deploy's ERTS check)", cluster, poller)}
    ROWS.extend([rows["truncated"], rows["erts"]])
    before = snapshot(cluster)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip([k for k, p in cases], pool.map(lambda case: cluster.playbook("deploy", check=False, extra={"deploy_release": case[1]}), cases)))
    after = snapshot(cluster)
    assert after == before
    for kind, result in results.items():
        assert result.rc != 0, (kind, result.tail(20))
        assert result.changed == 0, (kind, result.recap)
    for kind in ("corrupt", "truncated"):
        message = [line.replace(str(tmp_path) + "/", "") for line in results[kind].out.splitlines() if "fatal:" in line]
        assert "Refusing release" in results[kind].out and "cannot unpack" in results[kind].out, message
        rows[kind].did = "deploy failed before any change (changed=0; allow-lists, current, releases, workers as before): %s" % _short(message)
    assert "ERTS 99.0" in results["erts"].out, results["erts"].tail()
    rows["erts"].did = "deploy refused it before any change (the workers run ERTS %s; the release names 99.0)" % erts
    for r in rows.values():
        r.close()
    for r in rows.values():
        r.check()


def _short(lines):
    text = " ".join(lines)[:400]
    for marker in ("Refusing", "not a", "Cannot", "cannot", "failed", "error"):
        if marker in text:
            return text[text.index(marker):][:160].rstrip('"}')
    return text[:200]
