"""Every podman call goes through here, with localcloud's containers.conf (runc and rlimits that work here)."""

import json
import os
import shutil
import subprocess

from localcloud.errors import LocalcloudError

CONTAINERS_CONF = """\
# Written by localcloud. podman's defaults fail on these hosts (see docs/localcloud.md):
# crun refuses cgroup v1 "hybrid" mode, and the default rlimits are refused.
[containers]
default_ulimits = ["nofile=1024:4096", "nproc=1024:4096"]

[engine]
runtime = "runc"
"""


def write_containers_conf(path):
    if not path.exists() or path.read_text() != CONTAINERS_CONF:
        path.write_text(CONTAINERS_CONF)
    return path


def preflight(need_debootstrap=False):
    """Clear errors before anything is changed."""
    problems = []
    if os.geteuid() != 0:
        problems.append("localcloud needs root (podman bridge networks, static container IPs, the 169.254.169.254 address)")
    for tool in ("podman", "runc", "ip") + (("debootstrap",) if need_debootstrap else ()):
        if shutil.which(tool) is None:
            problems.append("%s not found on PATH (apt-get install %s)" % (tool, {"ip": "iproute2"}.get(tool, tool)))
    if problems:
        raise LocalcloudError("cannot start localcloud:\n  - " + "\n  - ".join(problems))


class Podman:
    def __init__(self, containers_conf):
        self.env = dict(os.environ, CONTAINERS_CONF=str(containers_conf))

    def run(self, *args, check=True, input=None, stdin=None, timeout=300):
        proc = subprocess.run(
            ["podman"] + [str(a) for a in args],
            env=self.env,
            input=input,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise LocalcloudError("podman %s failed (%d): %s"
                                  % (" ".join(str(a) for a in args[:3]), proc.returncode, proc.stderr.decode(errors="replace").strip()))
        return proc

    def out(self, *args, **kwargs):
        return self.run(*args, **kwargs).stdout.decode()

    def json(self, *args, **kwargs):
        text = self.out(*args, **kwargs).strip()
        return json.loads(text) if text else []

    def image_exists(self, ref):
        return self.run("image", "exists", ref, check=False).returncode == 0

    def network_exists(self, name):
        return self.run("network", "exists", name, check=False).returncode == 0

    def containers(self, label):
        """All containers carrying `label` (running or not), as podman ps --format json gives them."""
        return self.json("ps", "-a", "--filter", "label=%s" % label, "--format", "json")
