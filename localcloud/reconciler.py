"""Makes the hosts (podman containers) follow the instances in moto's in-process EC2 backend."""

import collections
import concurrent.futures
import json
import logging
import threading
import time

from localcloud import config, ec2, firewall, images, netns, network
from localcloud.errors import LocalcloudError

log = logging.getLogger("localcloud.reconciler")

SSH_WAIT_SECONDS = 90  # how long a booting host may take before its instance is reported anyway
RETRY_SECONDS = 5
RESYNC_SECONDS = 5  # re-read the containers from podman now and then (a host may power itself off)


def container_name(instance_id):
    return config.CONTAINER_PREFIX + instance_id


def hostname(ip):
    return "ip-" + ip.replace(".", "-")


def wait_for_ssh(ip, deadline, netns_name=None):
    """True once sshd answers on ip:22 (it starts after localcloud-init); in namespace `netns_name` (None: here).

    The reconciler probes from inside the host's own namespace (over its loopback), so that the host's security
    groups do not matter: a host whose groups keep the controller out is still running, as on EC2."""
    while time.monotonic() < deadline:
        try:
            with netns.create_connection(netns_name, (ip, 22), timeout=1) as sock:
                sock.settimeout(2)
                if sock.recv(4).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


class Reconciler:
    def __init__(self, podman, paths, images):
        self.podman = podman
        self.paths = paths
        self.images = images  # {"base": ref, "baked": ref}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._busy = set()  # instance ids with an action in flight
        self._failed = {}  # instance id -> reason (never retried)
        self._retry_after = {}  # instance id -> monotonic time before which a failed action is not retried
        self._touched = None  # while sync_containers lists podman's containers: ids acted on meanwhile
        self.containers = {}  # instance id -> "running" | "stopped"
        self.container_ips = {}  # instance id -> the container's IP (from its label)
        self.container_networks = {}  # instance id -> the network its host is on (from its label)
        self.by_ip = {}  # (network, private IP) -> instance (hosts only), for IMDS
        self.on_region_network = None  # called with (name, made now) once a region network exists (the daemon serves IMDS there)
        self._network_locks = collections.defaultdict(threading.Lock)
        self._networks_ready = set()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="host")  # most of them wait for sshd
        self._last_sync = 0.0
        self.firewall = firewall.Firewall(podman, enforce=firewall.mode() == "enforce")  # its thread: serve

    # -- AMI -> image ------------------------------------------------------
    def ami_map(self):
        mapping = {config.BASE_AMI_ID: self.images["base"], config.BAKED_AMI_ID: self.images["baked"]}
        try:
            mapping.update(json.loads(self.paths.ami_map.read_text()))
        except FileNotFoundError:
            pass
        except ValueError as exc:
            log.error("ignoring %s: %s", self.paths.ami_map, exc)
        return mapping

    def image_for(self, ami_id):
        return self.ami_map().get(ami_id, self.images["base"])  # moto's own AMIs: the base image

    def record_ami(self, ami_id, image_ref):
        with self._lock:
            mapping = {}
            try:
                mapping = json.loads(self.paths.ami_map.read_text())
            except (FileNotFoundError, ValueError):
                pass
            mapping[ami_id] = image_ref
            tmp = self.paths.ami_map.with_suffix(".tmp")
            tmp.write_text(json.dumps(mapping, indent=2, sort_keys=True) + "\n")
            tmp.replace(self.paths.ami_map)

    # -- loop ----------------------------------------------------------------
    def wake(self):
        self._wake.set()
        self.firewall.wake()  # groups or members may have changed too

    def stop(self):
        self._stop.set()
        self._wake.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def sync_containers(self):
        # Hosts with an action in flight at any time during the (slow) listing keep what the action recorded.
        with self._lock:
            self._touched = set(self._busy)
        found = {}
        try:
            for c in self.podman.containers("%s=instance" % config.LABEL):
                labels = c.get("Labels") or {}
                iid = labels.get(config.LABEL_INSTANCE_ID)
                if iid:
                    found[iid] = "running" if c.get("State") == "running" else "stopped"
                    self.container_ips[iid] = labels.get(config.LABEL_PRIVATE_IP)
                    self.container_networks[iid] = labels.get(config.LABEL_NETWORK) or config.NETWORK_NAME
            namespaces = network.host_namespaces()
        finally:
            with self._lock:
                skip, self._touched = self._touched | self._busy, None
        with self._lock:
            for iid in list(self.containers):
                if iid not in skip and iid not in found:
                    self.containers.pop(iid)
            for iid, state in found.items():
                if iid not in skip:
                    self.containers[iid] = state
        # A host namespace whose container is gone (removed by hand, or by a daemon that died): remove it.
        for iid in set(namespaces) - set(found) - skip:
            with self._lock:
                if iid in self._busy:
                    continue
            log.info("removing the network namespace of %s (no container)", iid)
            network.detach_host(iid)
        self._last_sync = time.monotonic()

    def run(self):
        self.sync_containers()
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                if time.monotonic() - self._last_sync > RESYNC_SECONDS:
                    self.sync_containers()
                self.reconcile()
            except Exception:  # keep the daemon alive; the next pass retries
                log.exception("reconcile pass failed")

    def reconcile(self):
        live = {}
        by_ip = {}
        for _region, instance in ec2.all_instances():
            live[instance.id] = instance
            key = (ec2.network_of(instance), instance.private_ip)
            if instance._state.name not in ("terminated",) and instance.id in self.containers:
                by_ip[key] = instance
            elif instance._state.name == "pending":
                by_ip.setdefault(key, instance)
        self.by_ip = by_ip
        with self._lock:
            containers = dict(self.containers)
            busy = set(self._busy)
        now = time.monotonic()
        for iid, instance in live.items():
            if iid in busy or iid in self._failed or self._retry_after.get(iid, 0) > now:
                continue
            state = instance._state.name
            container = containers.get(iid)
            action = None
            if state == "pending":
                if container is None:
                    action = self._launch
                elif container == "stopped":
                    action = self._start
                else:
                    action = self._report_running
            elif state == "running":
                if container is None:
                    action = self._host_lost
                elif container == "stopped":
                    action = self._host_shut_down
            elif state in ("stopping", "stopped"):
                if container == "running":
                    action = self._stop_host
                elif state == "stopping":
                    action = self._report_stopped
            elif state in ("shutting-down", "terminated"):
                if container is not None:
                    action = self._remove
                elif state == "shutting-down":
                    action = self._report_terminated
            if action is not None:
                self._submit(action, instance)
        # Containers whose instance is gone (moto reset, a previous daemon): remove them.
        for iid in set(containers) - set(live) - busy:
            self._submit(self._remove_orphan, iid)

    def _submit(self, action, subject):
        iid = subject if isinstance(subject, str) else subject.id
        with self._lock:
            self._busy.add(iid)
            if self._touched is not None:
                self._touched.add(iid)

        def run():
            try:
                action(subject)
            except Exception as exc:  # one host's failure must not stop the others
                if not isinstance(exc, LocalcloudError):
                    log.exception("%s %s failed", action.__name__, iid)
                if action.__name__ == "_launch":
                    self._fail(subject, str(exc))
                elif action.__name__ == "_start":  # EC2: a start that fails leaves the instance stopped
                    log.error("%s: start failed: %s", iid, exc)
                    ec2.set_state(subject, "stopped", only_from=("pending",), reason="localcloud: start failed: %s" % str(exc)[:200])
                else:  # stop/remove/...: try again a little later
                    log.error("%s %s failed, retrying in %d s: %s", action.__name__, iid, RETRY_SECONDS, exc)
                    self._retry_after[iid] = time.monotonic() + RETRY_SECONDS
            finally:
                with self._lock:
                    self._busy.discard(iid)
                self.wake()

        self._pool.submit(run)

    def _fail(self, instance, reason):
        """As EC2 does when an instance cannot start: it goes to terminated, with a reason."""
        self._failed[instance.id] = reason
        log.error("instance %s cannot have a host: %s", instance.id, reason)
        self.podman.run("rm", "-f", "-t", "0", container_name(instance.id), check=False)
        network.detach_host(instance.id)
        with self._lock:
            self.containers.pop(instance.id, None)
            self.container_ips.pop(instance.id, None)
            self.container_networks.pop(instance.id, None)
        ec2.set_state(instance, "terminated", reason="localcloud: %s" % reason[:200])

    # -- networks --------------------------------------------------------------
    def ensure_region_network(self, name):
        """Make region network `name` (launches into it meanwhile wait), then let the daemon serve IMDS there."""
        with self._network_locks[name]:
            made = not netns.exists(name)
            if name in self._networks_ready and not made:
                return
            network.ensure_region_network(name)
            if self.on_region_network is not None:
                self.on_region_network(name, made)
            self._networks_ready.add(name)
            log.info("region network %s ready", name)

    def netns_of(self, instance_id):
        """The host's own namespace (a name, or the path podman gave it), from which its sshd is probed; None: here."""
        name = self.container_networks.get(instance_id, config.NETWORK_NAME)
        if name != config.NETWORK_NAME:
            return config.host_netns_name(instance_id)
        return self.firewall.namespace(instance_id, name, refresh=True)

    def _start_container(self, instance_id):
        """Start a made (or stopped) container with its security groups applied before its first process runs:
        `podman init` makes its network namespace, the rules go in, then `podman start`."""
        name = container_name(instance_id)
        if self.firewall.enforce:
            self.podman.run("init", name)
            self.firewall.apply_now(instance_id, self.container_networks.get(instance_id, config.NETWORK_NAME))
        self.podman.run("start", name)

    # -- actions -------------------------------------------------------------
    def _launch(self, instance):
        ip = instance.private_ip
        if not ec2.in_network(ip):
            raise LocalcloudError("private IP %s is outside localcloud's network %s" % (ip, config.NETWORK_SUBNET))
        net = ec2.network_of(instance)
        self._wait_for_address(instance, ip, net)
        image = self.image_for(instance.image_id)
        name = container_name(instance.id)
        primary = [nic for nic in list(instance.nics.values()) if (nic.device_index or 0) == 0]
        mac = primary[0].mac_address if primary else None
        started = time.monotonic()
        if net == config.NETWORK_NAME:  # the default region: podman's network, routed on this machine
            net_args = [
                "--network", config.NETWORK_NAME, "--ip", ip,
                *(["--mac-address", mac] if mac else []),  # the primary network interface's MAC, as IMDS reports it
            ]
        else:  # another region or account: a namespace of the host's own on that region's bridge
            self.ensure_region_network(net)
            net_args = [
                "--network", "ns:%s" % network.attach_host(net, instance.id, ip, mac),
                "--add-host", "%s:%s" % (hostname(ip), ip), "--add-host", "%s:%s" % (name, ip),  # as podman writes them on its network
            ]
        run_args = [
            "create", "--name", name,
            "--label", "%s=instance" % config.LABEL,
            "--label", "%s=%s" % (config.LABEL_INSTANCE_ID, instance.id),
            "--label", "%s=%s" % (config.LABEL_PRIVATE_IP, ip),
            "--label", "%s=%s" % (config.LABEL_NETWORK, net),
            "--label", "%s=%s" % (config.LABEL_REGION, instance.region_name),
            "--label", "%s=%s" % (config.LABEL_ACCOUNT, instance.owner_id),
            *net_args,
            "--hostname", hostname(ip),
            "--systemd", "always",
            "--pull", "never",  # images are local only: never reach for a registry
            image, "/sbin/init",
        ]
        for attempt in (1, 2):  # one retry: podman can fail transiently when many hosts start at once
            self.podman.run("rm", "-f", "-t", "0", name, check=False)
            try:
                self.podman.run(*run_args)
                with self._lock:
                    self.container_networks[instance.id] = net
                self._start_container(instance.id)
                break
            except LocalcloudError:
                if attempt == 2:
                    raise
                log.warning("%s: podman run failed, retrying once", instance.id, exc_info=True)
                time.sleep(1)
        with self._lock:
            self.containers[instance.id] = "running"
            self.container_ips[instance.id] = ip
            self.container_networks[instance.id] = net
        self.by_ip[(net, ip)] = instance
        self._await_ssh(instance, started)

    def _wait_for_address(self, instance, ip, net, bound=60):
        """moto hands out a terminated instance's IP again at once: wait until that host's container is gone.

        Only hosts of the same network count (every region's default VPC is 172.31.0.0/16, each region is a
        network of its own). An address held there by a live instance (e.g. another VPC of the same region with
        the same CIDR block) is a clash: the new instance gets no host.
        """
        deadline = time.monotonic() + bound
        while True:
            holders = [iid for iid, held in list(self.container_ips.items())
                       if held == ip and iid != instance.id and iid in self.containers
                       and self.container_networks.get(iid, config.NETWORK_NAME) == net]
            if not holders:
                return
            states = {i.id: i._state.name for _region, i in ec2.all_instances() if i.id in holders}
            live = [iid for iid in holders if states.get(iid) not in (None, "shutting-down", "terminated")]
            if live:
                raise LocalcloudError("private IP %s is already used by %s in network %s" % (ip, live[0], net))
            if time.monotonic() > deadline:
                raise LocalcloudError("private IP %s is still held by the container of %s" % (ip, holders[0]))
            self.wake()
            time.sleep(0.2)

    def _start(self, instance):
        started = time.monotonic()
        self._start_container(instance.id)
        with self._lock:
            self.containers[instance.id] = "running"
        self._await_ssh(instance, started)

    def _await_ssh(self, instance, started):
        if not wait_for_ssh(instance.private_ip, time.monotonic() + SSH_WAIT_SECONDS, self.netns_of(instance.id)):
            log.warning("%s: sshd not answering on %s after %d s; reporting running anyway", instance.id, instance.private_ip, SSH_WAIT_SECONDS)
        if ec2.set_state(instance, "running", only_from=("pending",)):
            log.info("%s running at %s (%.1f s)", instance.id, instance.private_ip, time.monotonic() - started)

    def _host_shut_down(self, instance):
        """The host powered itself off (e.g. `poweroff` inside): EC2 applies the shutdown behaviour."""
        if instance.instance_initiated_shutdown_behavior == "terminate":
            if ec2.set_state(instance, "shutting-down", only_from=("running",)):
                self._remove(instance)
        elif ec2.set_state(instance, "stopped", only_from=("running",)):
            log.info("%s stopped from inside the host", instance.id)

    def _host_lost(self, instance):
        """The container of a running instance is gone (removed by hand): report the instance terminated."""
        proc = self.podman.run("inspect", "--format", "{{.State.Status}}", container_name(instance.id), check=False)
        if proc.returncode == 0:  # only our view was stale
            with self._lock:
                self.containers[instance.id] = "running" if proc.stdout.strip() == b"running" else "stopped"
            return
        log.warning("%s: its container is gone", instance.id)
        network.detach_host(instance.id)
        ec2.set_state(instance, "terminated", only_from=("running",), reason="localcloud: the host's container was removed outside localcloud")

    def reboot(self, instance):
        if instance.id in self.containers:
            self._submit(self._reboot, instance)

    def _reboot(self, instance):
        self.podman.run("stop", "-t", "10", container_name(instance.id))  # not `restart`: the rules go in before it runs again
        self._start_container(instance.id)
        with self._lock:
            self.containers[instance.id] = "running"
        log.info("%s rebooted", instance.id)

    def _report_running(self, instance):
        self._await_ssh(instance, time.monotonic())

    def _stop_host(self, instance):
        self.podman.run("stop", "-t", "10", container_name(instance.id))
        with self._lock:
            self.containers[instance.id] = "stopped"
        self._report_stopped(instance)

    def _report_stopped(self, instance):
        if ec2.set_state(instance, "stopped", only_from=("stopping",)):
            log.info("%s stopped", instance.id)

    def _remove(self, instance):
        self.podman.run("rm", "-f", "-t", "5", container_name(instance.id))
        network.detach_host(instance.id)
        with self._lock:
            self.containers.pop(instance.id, None)
            self.container_ips.pop(instance.id, None)
            self.container_networks.pop(instance.id, None)
        self._report_terminated(instance)

    def _report_terminated(self, instance):
        if ec2.set_state(instance, "terminated", only_from=("shutting-down",)):
            log.info("%s terminated", instance.id)

    def _remove_orphan(self, instance_id):
        log.info("removing container of unknown instance %s", instance_id)
        self.podman.run("rm", "-f", "-t", "0", container_name(instance_id), check=False)
        network.detach_host(instance_id)
        with self._lock:
            self.containers.pop(instance_id, None)
            self.container_ips.pop(instance_id, None)
            self.container_networks.pop(instance_id, None)

    # -- CreateImage / DeregisterImage ------------------------------------------
    def forget_image(self, ami_id):
        """DeregisterImage of a CreateImage AMI: drop its map entry and its image (kept while a host uses it)."""
        ref = "%s:%s" % (images.CREATED_IMAGE_REPO, ami_id)
        with self._lock:
            try:
                mapping = json.loads(self.paths.ami_map.read_text())
            except (FileNotFoundError, ValueError):
                return
            if mapping.get(ami_id) != ref:
                return
            del mapping[ami_id]
            tmp = self.paths.ami_map.with_suffix(".tmp")
            tmp.write_text(json.dumps(mapping, indent=2, sort_keys=True) + "\n")
            tmp.replace(self.paths.ami_map)
        self._pool.submit(self.podman.run, "rmi", ref, check=False)
    def create_image(self, instance, ami):
        """Commit the instance's container to an image for the new AMI (no reboot: like NoReboot=true)."""
        ref = "%s:%s" % (images.CREATED_IMAGE_REPO, ami.id)

        def commit():
            try:
                if instance.id in self.containers:
                    self.podman.run("commit", "--change", "CMD=/sbin/init", "--change", "STOPSIGNAL=SIGRTMIN+3", container_name(instance.id), ref, timeout=900)
                    self.record_ami(ami.id, ref)
                else:  # no host (e.g. launched before the daemon started): the AMI boots what its source booted
                    self.record_ami(ami.id, self.image_for(instance.image_id))
                ami.state = "available"
                log.info("%s: image %s from %s", ami.id, ref, instance.id)
            except Exception:
                log.exception("CreateImage %s from %s failed", ami.id, instance.id)
                ami.state = "failed"

        self._pool.submit(commit)
