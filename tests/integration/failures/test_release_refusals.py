"""Releases the cluster must not take: truncated, corrupt, another ERTS. Each is refused before any change."""

import gzip
import shutil
import tarfile

import pytest

from failures_lib import BASE_VSN, snapshot

CASES = {
    # The first half of the tarball: gzip ends early.
    "truncated": lambda src, dst: dst.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2]),
    # Same length, bytes in the middle overwritten: the gzip CRC or the deflate stream fails.
    "corrupt": lambda src, dst: dst.write_bytes(_corrupt(src.read_bytes())),
}


def _corrupt(data):
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 512]) + data[middle + 512:]


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_broken_tarball_is_refused(cluster, releases, row, tmp_path, kind):
    """release tarball truncated / corrupt"""
    row.name = "release tarball %s (deploy)" % kind
    src = tmp_path / "v2-src.tar.gz"
    shutil.copy(releases["v2"], src)
    bad = tmp_path / ("hello_cluster-2.0.0-%s.tar.gz" % kind)
    CASES[kind](src, bad)
    with pytest.raises((tarfile.TarError, EOFError, OSError, gzip.BadGzipFile)):
        with tarfile.open(bad) as tar:  # the fault is real: the tarball does not read
            tar.getmembers()
            for member in tar:
                if member.isfile():
                    tar.extractfile(member).read()
    before = snapshot(cluster)
    result = cluster.playbook("deploy", check=False, extra={"deploy_release": str(bad)})
    after = snapshot(cluster)
    assert result.rc != 0
    assert result.changed == 0, result.recap
    assert after == before
    assert all(v == BASE_VSN for v in after["workers"].values())
    message = [line for line in result.out.splitlines() if "fatal:" in line]
    row.did = "deploy failed before any change (changed=0; allow-list, current, releases, workers as before): %s" % (
        _short([m.replace(str(tmp_path) + "/", "") for m in message]))
    row.close()
    row.check()
    assert "Refusing release" in result.out and "cannot unpack" in result.out, message


def test_release_of_another_erts_is_refused(cluster, releases, row, tmp_path):
    """a release naming another ERTS than the workers run (deploy's ERTS check)"""
    src = tmp_path / "erts"
    with tarfile.open(releases["v2"]) as tar:
        tar.extractall(src, filter="data")  # nosec - our own build
    shutil.move(str(src / "releases" / "2.0.0"), str(src / "releases" / "2.0.1"))
    rel = src / "releases" / "2.0.1" / "hello_cluster.rel"
    text = rel.read_text()
    erts = text.split("{erts,", 1)[1].split("}", 1)[0].strip().strip('"')
    rel.write_text(text.replace('"2.0.0"}', '"2.0.1"}', 1).replace('"%s"' % erts, '"99.0"', 1))
    before = snapshot(cluster)
    result = cluster.playbook("deploy", check=False, extra={"deploy_release": str(src)})
    after = snapshot(cluster)
    assert result.rc != 0 and "ERTS 99.0" in result.out, result.tail()
    assert result.changed == 0 and after == before
    row.did = "deploy refused it before any change (the workers run ERTS %s; the release names 99.0)" % erts
    row.close()
    row.check()


def _short(lines):
    text = " ".join(lines)[:400]
    for marker in ("Refusing", "not a", "Cannot", "cannot", "failed", "error"):
        if marker in text:
            return text[text.index(marker):][:160].rstrip('"}')
    return text[:200]
