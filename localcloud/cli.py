"""python -m localcloud up|down|status|env|images|ssh (see docs/localcloud.md)."""

import argparse
import contextlib
import fcntl
import json
import os
import re
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from localcloud import config, firewall, images, netns, network
from localcloud.errors import LocalcloudError
from localcloud.podman import Podman, preflight, write_containers_conf

START_TIMEOUT = 60


def _podman(paths):
    return Podman(write_containers_conf(paths.containers_conf))


def daemon_pid(paths):
    """The pid of the running daemon, or None (a stale pid file, e.g. after a crash, counts as none)."""
    try:
        pid = int(paths.pid.read_text().split()[0])
        cmdline = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    if b"localcloud" in cmdline and b"serve" in cmdline:
        return pid
    return None


def daemon_info(paths):
    try:
        return json.loads(paths.info.read_text())
    except (OSError, ValueError):
        return {}


def api_answers(url):
    try:
        urllib.request.urlopen(url + "/localcloud/health", timeout=10).read()  # nosec - loopback only
        return True
    except OSError:
        return False


def ensure_ssh_key(paths):
    if not paths.ssh_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "localcloud", "-f", str(paths.ssh_key)], check=True)
    return paths.ssh_key


@contextlib.contextmanager
def cli_lock(paths):
    """One up or down at a time (several people may run `up` at once)."""
    paths.ensure()
    with open(paths.lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def cmd_up(args, paths):
    firewall.mode()  # a wrong LOCALCLOUD_SECURITY_GROUPS fails here, before anything changes
    preflight()
    with cli_lock(paths):
        return _up(args, paths)


# Each host runs systemd, which takes several inotify instances; the kernel's default (128 per user,
# shared by every container) stops the hosts' systemd before sshd at about 30 hosts.
INOTIFY_INSTANCES = 1024
INOTIFY_SYSCTL = "/proc/sys/fs/inotify/max_user_instances"


def ensure_inotify_instances(path=INOTIFY_SYSCTL, wanted=INOTIFY_INSTANCES):
    """Raise fs.inotify.max_user_instances to `wanted` when lower (never lowers it); returns the value in force."""
    with open(path) as handle:
        current = int(handle.read().strip())
    if current >= wanted:
        return current
    with open(path, "w") as handle:
        handle.write("%d\n" % wanted)
    print("localcloud: fs.inotify.max_user_instances %d -> %d (systemd in every host needs its own)" % (current, wanted), file=sys.stderr)
    return wanted


def _up(args, paths):
    ensure_inotify_instances()
    podman = _podman(paths)
    pid = daemon_pid(paths)
    if pid is not None:
        info = daemon_info(paths)
        if api_answers(info.get("endpoint_url", "")):
            print("localcloud: already running (pid %d, %s)" % (pid, info.get("endpoint_url")), file=sys.stderr)
            return 0
        raise LocalcloudError("localcloud daemon pid %d is running but its API does not answer; see %s or run `python -m localcloud down`" % (pid, paths.log))
    # Leftovers of a crashed daemon: its instances died with it (moto keeps state in memory), so remove their hosts.
    leftovers = podman.containers("%s=instance" % config.LABEL)
    if leftovers:
        print("localcloud: removing %d host(s) left by a previous run" % len(leftovers), file=sys.stderr)
        podman.run("rm", "-f", "-t", "0", *[c["Id"] for c in leftovers], check=False)
    for iid in network.host_namespaces():  # the namespaces of those hosts (region networks themselves are adopted)
        network.detach_host(iid)
    images.forget_created_images(paths, podman)
    _remove_saved_state(paths)  # a start from nothing: what a failed restart saved is stale
    paths.pid.unlink(missing_ok=True)
    paths.info.unlink(missing_ok=True)
    if not args.no_images:
        preflight(need_debootstrap=not podman.image_exists(images.base_image_ref()))
        images.ensure_images(paths, podman)
    ensure_ssh_key(paths)
    network.ensure_network(podman)
    network.ensure_imds_address()
    return _spawn_daemon(paths, args.port or config.port())


def _remove_saved_state(paths):
    """Remove a saved state file and the temporary files of interrupted saves. Anything else at that path (a
    directory) is not localcloud's: it stays, and the next save fails and says so."""
    if not paths.saved_state.is_dir():
        paths.saved_state.unlink(missing_ok=True)
    for tmp in paths.root.glob(paths.saved_state.name + ".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def _spawn_daemon(paths, port, restore=False):
    with open(paths.log, "ab") as logfile:
        proc = subprocess.Popen(
            [sys.executable, "-m", "localcloud", "serve", "--port", str(port)] + (["--restore"] if restore else []),
            cwd=str(config.REPO_ROOT),
            env=dict(os.environ, LOCALCLOUD_STATE_DIR=str(paths.root), PYTHONPATH=str(config.REPO_ROOT)),
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    url = config.endpoint_url(port)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalcloudError("localcloud daemon exited (%d); last lines of %s:\n%s" % (proc.returncode, paths.log, _tail(paths.log)))
        if paths.info.exists() and api_answers(url):
            print("localcloud: up (pid %d): EC2 API %s, IMDS %s, network %s %s"
                  % (proc.pid, url, config.IMDS_ADDRESS, config.NETWORK_NAME, config.NETWORK_SUBNET), file=sys.stderr)
            print('localcloud: eval "$(python -m localcloud env)" to use it', file=sys.stderr)
            return 0
        time.sleep(0.2)
    raise LocalcloudError("localcloud daemon did not answer within %d s; see %s" % (START_TIMEOUT, paths.log))


def cmd_restart(args, paths):
    """Replace the daemon (e.g. with new localcloud code) keeping the API's state and the running hosts."""
    firewall.mode()  # before the running daemon is stopped
    preflight()
    with cli_lock(paths):
        pid = daemon_pid(paths)
        if pid is None:
            print("localcloud: not running; starting it", file=sys.stderr)
            return _up(argparse.Namespace(port=args.port, no_images=False), paths)
        port = args.port or daemon_info(paths).get("port") or config.port()
        podman = _podman(paths)
        preflight(need_debootstrap=not podman.image_exists(images.base_image_ref()))
        images.ensure_images(paths, podman)  # new code may mean a new image recipe: build it before switching
        _remove_saved_state(paths)
        paths.restart_failed.unlink(missing_ok=True)
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 90
        while daemon_pid(paths) is not None:
            if paths.restart_failed.exists():
                reason = paths.restart_failed.read_text().strip()
                paths.restart_failed.unlink(missing_ok=True)
                raise LocalcloudError("the daemon could not save its state (%s); it keeps running unchanged, see %s" % (reason, paths.log))
            if time.monotonic() > deadline:
                raise LocalcloudError("daemon pid %d did not stop within 90 s; see %s" % (pid, paths.log))
            time.sleep(0.1)
        if not paths.saved_state.is_file():
            raise LocalcloudError("the daemon stopped without saving its state (see %s); `python -m localcloud up` starts afresh" % paths.log)
        paths.pid.unlink(missing_ok=True)
        paths.info.unlink(missing_ok=True)
        return _spawn_daemon(paths, port, restore=True)


def _tail(path, lines=20):
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cmd_down(args, paths):
    preflight()
    with cli_lock(paths):
        return _down(args, paths)


def _down(args, paths):
    podman = _podman(paths)
    pid = daemon_pid(paths)
    if pid is not None:
        os.kill(pid, 15)
        for _ in range(100):
            if daemon_pid(paths) is None:  # gone, or a zombie waiting for init
                break
            time.sleep(0.1)
        else:
            os.kill(pid, 9)
    removed = podman.containers(config.LABEL)
    if removed:
        podman.run("rm", "-f", "-t", "3", *[c["Id"] for c in removed], check=False)
    created_images = images.forget_created_images(paths, podman)
    region_networks = [n for n in network.remove_region_networks() if not n.startswith(config.HOST_NETNS_PREFIX)]
    had_network = network.remove_network(podman)
    had_address = network.remove_imds_address()
    paths.pid.unlink(missing_ok=True)
    paths.info.unlink(missing_ok=True)
    _remove_saved_state(paths)
    print(
        "localcloud: down (daemon %s, %d host(s), %d CreateImage image(s), network %s, %d region network(s), %s %s)"
        % (
            "stopped" if pid else "not running",
            len(removed),
            created_images,
            "removed" if had_network else "absent",
            len(region_networks),
            config.IMDS_ADDRESS,
            "removed" if had_address else "absent",
        ),
        file=sys.stderr,
    )
    return 0


def cmd_status(args, paths):
    podman = _podman(paths)
    pid = daemon_pid(paths)
    info = daemon_info(paths)
    answers = pid is not None and api_answers(info.get("endpoint_url", ""))
    print("daemon:   %s" % ("running, pid %d, %s%s" % (pid, info.get("endpoint_url"), "" if answers else " (API NOT ANSWERING)") if pid else "not running"))
    print("network:  %s" % ("%s %s" % (config.NETWORK_NAME, config.NETWORK_SUBNET) if podman.network_exists(config.NETWORK_NAME) else "absent"))
    print("imds:     %s" % ("%s on %s" % (config.IMDS_ADDRESS, config.IMDS_INTERFACE) if network.imds_address_present() else "absent"))
    print("host API: %s" % (info.get("host_endpoint_url") or "none (a daemon older than it)" if pid else "not running"))
    regions = network.region_networks()
    print("regions:  %s" % (" ".join(regions) if regions else "none (no instance outside %s yet)" % config.DEFAULT_REGION))
    print("security groups: %s" % (info.get("security_groups", "off (a daemon older than their enforcement)") if pid else "not running (`up` would: %s)" % _security_groups_mode()))
    print("state:    %s" % paths.root)
    hosts = podman.containers("%s=instance" % config.LABEL)
    api_states = _api_states(info.get("endpoint_url"), hosts) if answers else {}
    print("hosts:    %d" % len(hosts))
    if hosts:
        print("  %-22s %-15s %-10s %-14s %-24s %s" % ("instance", "private IP", "container", "instance state", "network", "image"))
    for c in hosts:
        labels = c.get("Labels") or {}
        iid = labels.get(config.LABEL_INSTANCE_ID, "?")
        print("  %-22s %-15s %-10s %-14s %-24s %s" % (iid, labels.get(config.LABEL_PRIVATE_IP, "?"), c.get("State"), api_states.get(iid, "?"),
                                                     labels.get(config.LABEL_NETWORK) or config.NETWORK_NAME, c.get("Image")))
    return 0 if (pid is None or answers) else 1


def _security_groups_mode():
    try:
        return firewall.mode()
    except LocalcloudError as exc:
        return str(exc)


def _api_states(endpoint_url, hosts):
    """{instance id: state name} from the API (best effort: {} on failure), in the regions the hosts are in
    (hosts of other accounts show "?")."""
    try:
        import boto3

        states = {}
        regions = {config.DEFAULT_REGION, config.region()} | {(c.get("Labels") or {}).get(config.LABEL_REGION) for c in hosts}
        for region in sorted(r for r in regions if r):
            client = boto3.client("ec2", endpoint_url=endpoint_url, region_name=region,
                                  aws_access_key_id="testing", aws_secret_access_key="testing")
            for page in client.get_paginator("describe_instances").paginate():
                states.update((i["InstanceId"], i["State"]["Name"]) for r in page["Reservations"] for i in r["Instances"])
        return states
    except Exception:  # status must work even when the API misbehaves
        return {}


def env_lines(paths):
    info = daemon_info(paths)
    region = config.region()
    values = [
        ("AWS_ENDPOINT_URL", info.get("endpoint_url") or config.endpoint_url()),
        # The same API as the hosts reach it (from a host, not from here); a daemon older than it has none.
        ("LOCALCLOUD_HOST_ENDPOINT_URL", info.get("host_endpoint_url", "") if info else config.host_endpoint_url()),
        ("AWS_REGION", region),
        ("AWS_DEFAULT_REGION", region),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("CONTAINERS_CONF", str(paths.containers_conf)),
        ("LOCALCLOUD_STATE_DIR", str(paths.root)),
    ]
    if paths.ssh_key.exists():
        values.append(("LOCALCLOUD_SSH_KEY", str(paths.ssh_key)))
        values.append(("LOCALCLOUD_KEY_NAME", config.DEFAULT_KEY_NAME))
    values.append(("LOCALCLOUD_SSH_PROXY_COMMAND", proxy_command()))
    return ["export %s=%s" % (k, shlex.quote(v)) for k, v in values] + ["unset AWS_SESSION_TOKEN AWS_PROFILE"]


def cmd_env(args, paths):
    print("\n".join(env_lines(paths)))
    return 0


def cmd_images(args, paths):
    podman = _podman(paths)
    if args.action == "build":
        preflight(need_debootstrap=not podman.image_exists(images.base_image_ref()))
        paths.ensure()
        refs = images.ensure_images(paths, podman)
        images.prune_old(podman)
        print(json.dumps(refs, indent=2))
        return 0
    if args.action == "build-ee-base":  # the execution environment's base image (make ee, docs/ee.md)
        preflight(need_debootstrap=not podman.image_exists(images.ee_base_image_ref()))
        paths.ensure()
        print(images.ensure_ee_base_image(paths, podman))
        return 0
    if args.action == "map":
        if not args.ami_id or not args.image:
            raise LocalcloudError("usage: python -m localcloud images map AMI_ID IMAGE")
        if not args.ami_id.startswith("ami-"):
            raise LocalcloudError("not an AMI id: %r" % args.ami_id)
        if not podman.image_exists(args.image):
            raise LocalcloudError("no such podman image: %r" % args.image)
        paths.ensure()
        mapping = json.loads(paths.ami_map.read_text()) if paths.ami_map.exists() else {}
        mapping[args.ami_id] = args.image
        paths.ami_map.write_text(json.dumps(mapping, indent=2, sort_keys=True) + "\n")
        print("%s -> %s" % (args.ami_id, args.image))
        return 0
    if args.action == "unmap":
        mapping = json.loads(paths.ami_map.read_text()) if paths.ami_map.exists() else {}
        if args.ami_id not in mapping:
            raise LocalcloudError("%r is not in the AMI map" % args.ami_id)
        del mapping[args.ami_id]
        paths.ami_map.write_text(json.dumps(mapping, indent=2, sort_keys=True) + "\n")
        print("%s: removed (launches fall back to the base image)" % args.ami_id)
        return 0
    rows = [
        (config.BASE_AMI_ID, config.BASE_IMAGE_NAME, images.base_image_ref()),
        (config.BAKED_AMI_ID, config.BAKED_IMAGE_NAME, images.baked_image_ref()),
    ]
    if paths.ami_map.exists():
        rows += [(ami, "", ref) for ami, ref in sorted(json.loads(paths.ami_map.read_text()).items())]
    rows.append(("(any other AMI)", "", images.base_image_ref()))
    for ami, name, ref in rows:
        print("%-22s %-28s %s%s" % (ami, name, ref, "" if ami.startswith("(") or podman.image_exists(ref) else "  (not built)"))
    return 0


# EC2's private DNS names: ip-172-31-0-4.ec2.internal (us-east-1), ip-172-31-0-4.eu-west-1.compute.internal (others).
_PRIVATE_DNS_NAME = re.compile(r"^ip-(\d+)-(\d+)-(\d+)-(\d+)\.(?:ec2\.internal|([a-z0-9-]+)\.compute\.internal)\.?$")


def resolve_host(host, region=None, account=None):
    """(address, network name) of a host named by its private IP (in `region`, else the default region) or by
    its private DNS name as EC2 gives it (PrivateDnsName, which names the region; the address is then the IP)."""
    match = _PRIVATE_DNS_NAME.match(host)
    if not match:
        return host, config.region_network_name(account or config.ACCOUNT_ID, region or config.DEFAULT_REGION)
    named_region = match.group(5) or "us-east-1"
    if region and region != named_region:
        raise LocalcloudError("%s is a host name of region %s, not %s" % (host, named_region, region))
    return ".".join(match.group(i) for i in range(1, 5)), config.region_network_name(account or config.ACCOUNT_ID, named_region)


def proxy_command(region=None, account=None):
    """An ssh ProxyCommand reaching hosts of every network (%h: a private DNS name, or an IP with `region`)."""
    options = (["--region", region] if region else []) + (["--account", account] if account else [])
    return " ".join(shlex.quote(a) for a in ["env", "PYTHONPATH=%s" % config.REPO_ROOT, sys.executable, "-m", "localcloud", "proxy"] + options) + " %h %p"


def cmd_ssh(args, paths):
    key = ensure_ssh_key(paths) if args.identity is None else args.identity
    remote = args.remote_command[1:] if args.remote_command[:1] == ["--"] else args.remote_command
    ip, name = resolve_host(args.host, args.region, args.account)
    # Host keys are new with every instance and addresses are reused: do not record them.
    cmd = ["ssh", "-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    if name != config.NETWORK_NAME:  # not routed here: through the region's namespace
        if not netns.exists(name):
            raise LocalcloudError("no network %s: no instance of that region (and account) has been launched yet" % name)
        cmd += ["-o", "ProxyCommand=" + proxy_command(args.region, args.account)]
        # Never share a multiplexed connection with the host at the same IP in another network.
        cmd += ["-o", "ControlPath=none"]
    os.execvp("ssh", cmd + ["%s@%s" % (args.user, args.host if name != config.NETWORK_NAME else ip)] + remote)


def cmd_proxy(args, paths):
    """ssh's ProxyCommand: relay stdin/stdout to host:port inside the host's network."""
    ip, name = resolve_host(args.host, args.region, args.account)
    try:
        sock = netns.create_connection(None if name == config.NETWORK_NAME else name, (ip, args.port), timeout=10)
    except OSError as exc:
        raise LocalcloudError("cannot connect to %s:%d in network %s: %s" % (ip, args.port, name, exc)) from None
    sock.settimeout(None)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ)
    selector.register(sock, selectors.EVENT_READ)
    open_ends = 2
    while open_ends:
        for key, _ in selector.select():
            if key.fileobj is sock:
                data = sock.recv(65536)
                if not data:
                    return 0  # the host closed: ssh sees the end of the stream
                while data:
                    data = data[os.write(stdout, data):]
            else:
                data = os.read(stdin, 65536)
                if not data:
                    selector.unregister(stdin)
                    sock.shutdown(socket.SHUT_WR)
                    open_ends -= 1
                    continue
                sock.sendall(data)
    return 0


def cmd_serve(args, paths):
    from localcloud.serve import serve  # moto is imported only by the daemon

    preflight()
    return serve(paths.ensure(), args.port or config.port(), restore=args.restore)


def main(argv=None):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `status | head` ends quietly
    parser = argparse.ArgumentParser(prog="python -m localcloud", description="A local EC2 whose instances are real hosts (podman containers).")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start localcloud (or reuse the running one)")
    up.add_argument("--port", type=int, help="EC2 API port on 127.0.0.1 (default $LOCALCLOUD_PORT or %d)" % config.DEFAULT_PORT)
    up.add_argument("--no-images", action="store_true", help="do not build missing images")
    sub.add_parser("down", help="remove everything localcloud made (hosts, network, address, daemon)")
    restart = sub.add_parser("restart", help="replace the daemon (new code) keeping the API state and the hosts")
    restart.add_argument("--port", type=int)
    sub.add_parser("status", help="show what runs")
    sub.add_parser("env", help="print export lines for eval")
    img = sub.add_parser("images", help="list the AMI -> image map; `build` builds the images; `build-ee-base` the execution environment's base; `map AMI IMAGE` / `unmap AMI` edit it")
    img.add_argument("action", nargs="?", choices=["list", "build", "build-ee-base", "map", "unmap"], default="list")
    img.add_argument("ami_id", nargs="?")
    img.add_argument("image", nargs="?")
    ssh = sub.add_parser("ssh", help="ssh to a host with localcloud's default key pair")
    ssh.add_argument("host", help="private IP (of a host in --region), or private DNS name (ip-172-31-0-4.eu-west-1.compute.internal)")
    ssh.add_argument("remote_command", nargs=argparse.REMAINDER, metavar="command")
    ssh.add_argument("-l", "--user", default="admin")
    ssh.add_argument("-i", "--identity")
    ssh.add_argument("--region", help="the host's region (default: the one a private DNS name names, else %s)" % config.DEFAULT_REGION)
    ssh.add_argument("--account", help="the host's account (default %s)" % config.ACCOUNT_ID)
    proxy = sub.add_parser("proxy", help="relay stdin/stdout to HOST:PORT in the host's network (an ssh ProxyCommand)")
    proxy.add_argument("host", help="private IP (of a host in --region), or private DNS name")
    proxy.add_argument("port", type=int)
    proxy.add_argument("--region")
    proxy.add_argument("--account")
    serve = sub.add_parser("serve", help="run the daemon in the foreground (what `up` starts)")
    serve.add_argument("--port", type=int)
    serve.add_argument("--restore", action="store_true", help="load the state saved by the previous daemon")
    args = parser.parse_args(argv)
    paths = config.Paths()
    handlers = {
        "up": cmd_up, "down": cmd_down, "restart": cmd_restart, "status": cmd_status, "env": cmd_env,
        "images": cmd_images, "ssh": cmd_ssh, "proxy": cmd_proxy, "serve": cmd_serve,
    }
    try:
        return handlers[args.command](args, paths)
    except LocalcloudError as exc:
        print("localcloud: error: %s" % exc, file=sys.stderr)
        return 1
