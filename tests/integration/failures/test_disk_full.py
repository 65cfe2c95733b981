"""The boot server's disk full during deploy: the releases directory is a full filesystem (a tmpfs mounted over it in
the boot server host's mount namespace, holding what was there plus a filler file that takes every free block)."""

import secrets
import subprocess


from failures_lib import LAYOUT, baseline_version, boot_states, current_release, e2e, refresh, releases_listed, versions

FILLER = ".failure-matrix-filler"


def host_sh(cluster, boot_ip, script):
    """A shell script in the boot server host's mount namespace (root on this machine: localcloud's host is a container)."""
    name = "localcloud-%s" % cluster.boot_server_ids[boot_ip]
    pid = subprocess.run(["podman", "inspect", "--format", "{{.State.Pid}}", name], env=cluster.env, capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    proc = subprocess.run(["nsenter", "-t", pid, "-m", "--", "sh", "-euc", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, "%s\n%s" % (proc.stdout, proc.stderr)
    return proc.stdout


FILL = r"""
d={releases}; keep=/run/failure-matrix-releases
rm -rf $keep; mkdir -p $keep; cp -a $d/. $keep/
used=$(du -sk $d | cut -f1)
mount -t tmpfs -o size=$((used + 1024))k,mode=0755 failure-matrix-full $d
cp -a $keep/. $d/
dd if=/dev/zero of=$d/{filler} bs=4k 2>/dev/null || true
df -k $d | tail -1
"""

UNFILL = r"""
d={releases}; keep=/run/failure-matrix-releases
rm -f $d/{filler}
if mountpoint -q $d; then rm -rf $keep; mkdir -p $keep; cp -a $d/. $keep/; umount $d; cp -a $keep/. $d/; fi
rm -rf $keep
"""


def test_boot_server_disk_full_during_deploy(cluster, releases, row, tmp_path):
    """the boot server's disk full during deploy"""
    refresh(cluster)
    # A version no boot server has yet (a kept cluster keeps the releases of earlier runs: installing one again writes nothing).
    vsn = "2.1.%d" % secrets.randbelow(10 ** 6)
    release = e2e.build_release(str(tmp_path), vsn)
    boot_ip = cluster.boot_server_ips[0]
    fmt = {"releases": LAYOUT["releases_dir"], "filler": FILLER}
    listed = releases_listed(cluster, boot_ip)
    base = baseline_version(cluster)
    try:
        df = host_sh(cluster, boot_ip, FILL.format(**fmt))
        assert df.split()[3] == "0", df  # no block free
        failed = cluster.playbook("deploy", check=False, extra={"deploy_release": release})
        assert failed.rc != 0
        assert "No space left on device" in failed.out or "ENOSPC" in failed.out or "enospc" in failed.out, failed.tail(40)
        # Failed before the switch: `current` as it was on every boot server, every worker serving the old release.
        assert {s["current"] for s in boot_states(cluster).values()} == {base}
        assert set(versions(cluster).values()) == {base}
        left = sorted(set(releases_listed(cluster, boot_ip)) - set(listed) - {FILLER})
        # Space freed: the same deploy again succeeds.
        host_sh(cluster, boot_ip, "rm -f %s/%s" % (LAYOUT["releases_dir"], FILLER))
        row.restarted = set(cluster.workers.values())
        again = cluster.playbook("deploy", check=False, extra={"deploy_release": release, "rolling_restart_timeout": 60})
        assert again.rc == 0, again.tail(40)
        assert {s["current"] for s in boot_states(cluster).values()} == {vsn}
        assert all(v == vsn for v in versions(cluster).values())
    finally:
        host_sh(cluster, boot_ip, UNFILL.format(**fmt))
    assert current_release(cluster, boot_ip) == vsn and vsn in releases_listed(cluster, boot_ip)
    row.did = ("deploy failed (No space left on device) before the switch: current %s, every worker on %s%s; after freeing space "
               "the same deploy succeeded (all on %s)" % (base, base, "; left a partial %s" % left if left else "", vsn))
    row.close()
    row.check()
