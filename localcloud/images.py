"""The host images: a Debian 12 "cloud image" built with debootstrap, and the same with Erlang baked in.

Each image's tag is a hash of its recipe, so an image is rebuilt only when its recipe changes.
The debootstrap root file system is cached as a tarball in the state directory.
"""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from localcloud import config
from localcloud.errors import LocalcloudError

SUITE = "bookworm"

# What a Debian cloud image has that an instance needs (cloud-init itself is replaced by localcloud-init).
BASE_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-apt",
    "sudo",
    "iproute2",
    "iputils-ping",
    "ca-certificates",
    "curl",
    "procps",
    "netbase",
    "less",
    "gnupg",
]

# The "baked" image: Debian's Erlang/OTP, for tests that should not spend time installing it.
BAKED_PACKAGES = [
    "erlang-base",
    "erlang-crypto",
    "erlang-syntax-tools",
    "erlang-inets",
    "erlang-ssl",
    "erlang-public-key",
    "erlang-asn1",
    "erlang-runtime-tools",
    "erlang-tools",
]

# localcloud's stand-in for cloud-init, run at every boot before sshd: on the first boot of an
# instance (a new instance id, also after CreateImage) it makes new SSH host keys and puts the key
# pair's public key into admin's authorized_keys, reading both from IMDS as cloud-init does.
INIT_SCRIPT = r"""#!/bin/sh
# localcloud-init: per-instance setup from the instance metadata service (written by localcloud).
set -u
IMDS=http://169.254.169.254/latest
STATE=/var/lib/localcloud-init
mkdir -p "$STATE"
token=$(curl -sf --retry 20 --retry-connrefused --retry-delay 1 --max-time 5 -X PUT \
        -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$IMDS/api/token") || { echo "localcloud-init: IMDS unreachable" >&2; exit 1; }
md() { curl -sf --max-time 5 -H "X-aws-ec2-metadata-token: $token" "$IMDS/$1"; }
iid=$(md meta-data/instance-id) || exit 1
if [ "$(cat "$STATE/instance-id" 2>/dev/null)" != "$iid" ]; then
    rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
    ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
    ssh-keygen -q -t ecdsa -N '' -f /etc/ssh/ssh_host_ecdsa_key
    ssh-keygen -q -t rsa -b 2048 -N '' -f /etc/ssh/ssh_host_rsa_key
    if key=$(md meta-data/public-keys/0/openssh-key); then
        install -d -m 0700 -o admin -g admin /home/admin/.ssh
        touch /home/admin/.ssh/authorized_keys
        grep -qxF "$key" /home/admin/.ssh/authorized_keys || printf '%s\n' "$key" >> /home/admin/.ssh/authorized_keys
        chown admin:admin /home/admin/.ssh/authorized_keys
        chmod 0600 /home/admin/.ssh/authorized_keys
    fi
    rm -f "$STATE/user-data-done"
    echo "$iid" > "$STATE/instance-id"
fi
"""

# cloud-init runs a user-data script ("#!" first line) once per instance; so does this.
USER_DATA_SCRIPT = r"""#!/bin/sh
# localcloud-user-data: run a "#!" user-data script once per instance, as cloud-init does (written by localcloud).
set -u
IMDS=http://169.254.169.254/latest
STATE=/var/lib/localcloud-init
[ -e "$STATE/user-data-done" ] && exit 0
token=$(curl -sf --max-time 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$IMDS/api/token") || exit 1
touch "$STATE/user-data-done"
curl -sf --max-time 5 -H "X-aws-ec2-metadata-token: $token" -o "$STATE/user-data" "$IMDS/user-data" || exit 0
if head -c 2 "$STATE/user-data" | grep -q '^#!'; then
    chmod 0700 "$STATE/user-data"
    exec "$STATE/user-data"
fi
"""

INIT_UNIT = """[Unit]
Description=localcloud-init: SSH host keys and the key pair for admin (cloud-init stand-in)
Before=ssh.service
After=systemd-networkd.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/localcloud-init
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""

USER_DATA_UNIT = """[Unit]
Description=localcloud-user-data: run a user-data script once (cloud-init stand-in)
After=localcloud-init.service ssh.service
Requires=localcloud-init.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/localcloud-user-data
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""

# Runs in the debootstrap root (chroot) once the packages are installed.
SETUP_SCRIPT = r"""set -eu
useradd --create-home --shell /bin/bash --groups adm,sudo,dip,plugdev admin 2>/dev/null || useradd --create-home --shell /bin/bash --groups adm,sudo admin
passwd --lock admin
printf 'admin ALL=(ALL) NOPASSWD:ALL\n' > /etc/sudoers.d/90-cloud-init-users
chmod 0440 /etc/sudoers.d/90-cloud-init-users
passwd --lock root
rm -f /etc/ssh/ssh_host_*
printf 'PasswordAuthentication no\nUseDNS no\n' > /etc/ssh/sshd_config.d/50-cloud-init.conf
chmod 0755 /usr/local/sbin/localcloud-init /usr/local/sbin/localcloud-user-data
systemctl enable localcloud-init.service localcloud-user-data.service ssh.service
# Nothing to do in a container: consoles, hardware, clocks.
systemctl mask getty@tty1.service console-getty.service serial-getty@.service systemd-udevd.service \
    systemd-udev-trigger.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer \
    systemd-remount-fs.service sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount 2>/dev/null || true
: > /etc/machine-id
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
"""


def debian_sources():
    """(mirror URL, deb822 text for the image) from the host's Debian apt sources."""
    override = os.environ.get("LOCALCLOUD_DEBIAN_MIRROR")
    stanzas = []
    for path in sorted(pathlib.Path("/etc/apt/sources.list.d").glob("*.sources")):
        for block in path.read_text().split("\n\n"):
            fields = {}
            for line in block.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, value = line.split(":", 1)
                    fields[key.strip()] = value.strip()
            suites = fields.get("Suites", "").split()
            if any(s == SUITE or s.startswith(SUITE + "-") for s in suites):
                stanzas.append(fields)
    mirror = override
    for fields in stanzas:
        if not mirror and SUITE in fields.get("Suites", "").split():
            mirror = fields["URIs"].split()[0]
    if not mirror:
        raise LocalcloudError("no Debian %s mirror found in /etc/apt/sources.list.d/*.sources; set LOCALCLOUD_DEBIAN_MIRROR" % SUITE)
    text = "\n".join(
        "Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        % (f["URIs"], f["Suites"], f.get("Components", "main"))
        for f in stanzas
    ) or "Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n" % (mirror, SUITE, SUITE)
    return mirror, text


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def base_recipe():
    mirror, sources = debian_sources()
    return {
        "suite": SUITE,
        "variant": "minbase",
        "packages": BASE_PACKAGES,
        "mirror": mirror,
        "files": {
            "/etc/apt/sources.list.d/debian.sources": sources,
            "/usr/local/sbin/localcloud-init": INIT_SCRIPT,
            "/usr/local/sbin/localcloud-user-data": USER_DATA_SCRIPT,
            "/etc/systemd/system/localcloud-init.service": INIT_UNIT,
            "/etc/systemd/system/localcloud-user-data.service": USER_DATA_UNIT,
        },
        "setup": SETUP_SCRIPT,
    }


def base_image_ref():
    return "localhost/%s:%s" % (config.BASE_IMAGE_NAME, _digest(base_recipe()))


def baked_recipe():
    return {"from": base_image_ref(), "packages": BAKED_PACKAGES}


def baked_image_ref():
    return "localhost/%s:%s" % (config.BAKED_IMAGE_NAME, _digest(baked_recipe()))


def _log(msg):
    print("localcloud: %s" % msg, file=sys.stderr, flush=True)


def debootstrap_tarball(paths, recipe):
    """The bare debootstrap root file system as a tarball, cached by the part of the recipe it depends on."""
    key = {k: recipe[k] for k in ("suite", "variant", "packages", "mirror")}
    tarball = paths.images / ("debootstrap-%s-%s.tar" % (recipe["suite"], _digest(key)))
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise LocalcloudError("debootstrap not found (apt-get install debootstrap): needed once to build the base image")
    debs = paths.images / "debs"
    debs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=paths.images, prefix="rootfs-") as tmp:
        rootfs = pathlib.Path(tmp) / "rootfs"
        started = time.monotonic()
        _log("debootstrap %s from %s (about a minute, once)" % (recipe["suite"], recipe["mirror"]))
        cmd = [
            "debootstrap",
            "--variant=%s" % recipe["variant"],
            "--include=%s" % ",".join(recipe["packages"]),
            "--cache-dir=%s" % debs,
            recipe["suite"],
            str(rootfs),
            recipe["mirror"],
        ]
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode != 0:
            log = rootfs / "debootstrap" / "debootstrap.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else proc.stderr.decode(errors="replace")[-2000:]
            raise LocalcloudError("debootstrap failed:\n%s" % tail)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
        _log("debootstrap done in %.0f s: %s" % (time.monotonic() - started, tarball))
    return tarball


def ensure_base_image(paths, podman):
    ref = base_image_ref()
    if not podman.image_exists(ref):
        _import_recipe_image(paths, podman, ref, base_recipe(), ["CMD=/sbin/init", "STOPSIGNAL=SIGRTMIN+3"])
    return ref


def _import_recipe_image(paths, podman, ref, recipe, changes):
    """Debootstrap the recipe (cached tarball), add its files, run its setup in a chroot, import it as `ref`."""
    tarball = debootstrap_tarball(paths, recipe)
    _log("building %s" % ref)
    with tempfile.TemporaryDirectory(dir=paths.images, prefix="rootfs-") as tmp:
        rootfs = pathlib.Path(tmp)
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-xf", str(tarball)], check=True)
        (rootfs / "etc/apt/sources.list").unlink(missing_ok=True)
        for name, content in recipe["files"].items():
            target = rootfs / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        proc = subprocess.run(
            ["chroot", str(rootfs), "/bin/sh", "-c", recipe["setup"]],
            capture_output=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
        )
        if proc.returncode != 0:
            raise LocalcloudError("image setup of %s in chroot failed:\n%s" % (ref, proc.stderr.decode(errors="replace")[-2000:]))
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", "-", "."], stdout=subprocess.PIPE)
        try:
            argv = ["import"]
            for change in changes:
                argv += ["--change", change]
            podman.run(*(argv + ["-", ref]), stdin=tar.stdout, timeout=600)
        finally:
            tar.stdout.close()
            tar.wait()


def ensure_baked_image(paths, podman):
    ref = baked_image_ref()
    if podman.image_exists(ref):
        return ref
    base = ensure_base_image(paths, podman)
    name = "localcloud-build-%d" % os.getpid()
    _log("baking %s (apt-get install %s)" % (ref, " ".join(BAKED_PACKAGES)))
    podman.run("rm", "-f", name, check=False)
    try:
        podman.run(
            "run", "--name", name, "--label", config.LABEL + "=build", base, "/bin/sh", "-c",
            "set -e; apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends %s >/dev/null;"
            " apt-get clean; rm -rf /var/lib/apt/lists/*" % " ".join(BAKED_PACKAGES),
            timeout=900,
        )
        podman.run("commit", "--change", "CMD=/sbin/init", "--change", "STOPSIGNAL=SIGRTMIN+3", name, ref, timeout=600)
    finally:
        podman.run("rm", "-f", name, check=False)
    return ref


def ensure_images(paths, podman):
    refs = {"base": ensure_base_image(paths, podman), "baked": ensure_baked_image(paths, podman)}
    # Stable names for tools that cannot ask localcloud (e.g. a molecule.yml): <name>:latest is the current recipe.
    for ref in refs.values():
        podman.run("tag", ref, ref.rsplit(":", 1)[0] + ":latest")
    return refs


def prune_old(podman):
    """Remove localcloud images of older recipes (tags that are no longer current)."""
    current = {base_image_ref(), baked_image_ref()}
    for image in podman.json("images", "--format", "json"):
        for name in image.get("Names") or []:
            repo = name.rsplit(":", 1)[0]
            if repo in ("localhost/" + config.BASE_IMAGE_NAME, "localhost/" + config.BAKED_IMAGE_NAME) and name not in current and not name.endswith(":latest"):
                podman.run("rmi", name, check=False)


CREATED_IMAGE_REPO = "localhost/localcloud-ami"  # CreateImage results: localhost/localcloud-ami:<ami id>


def forget_created_images(paths, podman):
    """Remove CreateImage results and their AMI map entries: their AMIs died with the daemon's memory."""
    mapping = {}
    if paths.ami_map.exists():
        try:
            mapping = json.loads(paths.ami_map.read_text())
        except ValueError:
            mapping = {}
    kept = {ami: ref for ami, ref in mapping.items() if not ref.startswith(CREATED_IMAGE_REPO + ":")}
    if kept != mapping:
        paths.ami_map.write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")
    removed = 0
    for image in podman.json("images", "--format", "json"):
        for name in image.get("Names") or []:
            if name.startswith(CREATED_IMAGE_REPO + ":"):
                removed += podman.run("rmi", "-f", name, check=False).returncode == 0
    return removed


# The execution environment's base (make ee, docs/ee.md): no systemd nor sshd, only what ansible-builder and the
# collection need in a controller container. python3-pip: ansible-builder installs with `python3 -m pip`;
# openssh-client: the EE's ansible reaches the hosts; erlang-base: erl_call for the Erlang modules run on the
# controller; ca-certificates: pip's HTTPS to PyPI during the build.
EE_BASE_IMAGE_NAME = "localcloud-ee-base-debian-12"
EE_BASE_PACKAGES = ["python3", "python3-pip", "openssh-client", "erlang-base", "ca-certificates"]

# The image is a single-purpose container: ansible-builder pip-installs into the system Python, as on the usual EE
# bases, so Debian's "externally managed" marker (PEP 668) goes.
EE_SETUP_SCRIPT = r"""set -eu
rm -f /usr/lib/python3*/EXTERNALLY-MANAGED
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
"""


def ee_base_recipe():
    mirror, sources = debian_sources()
    return {
        "suite": SUITE,
        "variant": "minbase",
        "packages": EE_BASE_PACKAGES,
        "mirror": mirror,
        "files": {"/etc/apt/sources.list.d/debian.sources": sources},
        "setup": EE_SETUP_SCRIPT,
    }


def ee_base_image_ref():
    return "localhost/%s:%s" % (EE_BASE_IMAGE_NAME, _digest(ee_base_recipe()))


def ensure_ee_base_image(paths, podman):
    """The execution environment's base image (debootstrap, as the host images; no registry), also tagged :latest."""
    ref = ee_base_image_ref()
    if not podman.image_exists(ref):
        _import_recipe_image(paths, podman, ref, ee_base_recipe(), ["CMD=/bin/bash"])
    podman.run("tag", ref, "localhost/%s:latest" % EE_BASE_IMAGE_NAME)
    return ref
