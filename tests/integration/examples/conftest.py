"""The example releases examples/hello_rebar3 (rebar3/relx) and examples/hello_elixir (mix release).

Once per session, v1 and v2 of both are built with their own `make tar` into a temporary directory,
inside a network namespace with no interface but loopback (`unshare -n`) and with an empty HOME
(no rebar3/hex/mix cache): the builds need no network and nothing downloaded before.
The booting tests unpack a tarball, give the node a unique short name, a loopback address and a free
HTTP port, and run it from disk with its own start script against a private epmd (ERL_EPMD_PORT),
so they never meet other people's nodes. Everything started is stopped.
"""

import os
import re
import shutil
import socket
import subprocess
import tarfile
import time
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
EXAMPLES = os.path.join(ROOT, "examples")
APPS = ("hello_rebar3", "hello_elixir")
VERSIONS = ("1.0.0", "2.0.0")
BUILD_HTTP_PORT = "8181"


def offline_prefix():
    """`unshare -n` as root, else a user namespace that may unshare the network (`unshare -rn`)."""
    return ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-r", "-n"]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Builds(object):
    """Tarballs of both apps, both versions, built offline; with the time each build took."""

    def __init__(self, out, home):
        self.out = out
        self.home = home
        self.seconds = {}
        self.logs = {}

    def tarball(self, app, vsn):
        return os.path.join(self.out, "%s-%s.tar.gz" % (app, vsn))

    def build(self, app, vsn):
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.home,
            "LANG": "C.UTF-8",
            # Nothing cached from an earlier build: a fresh home for rebar3, hex and mix.
            "REBAR_CACHE_DIR": os.path.join(self.home, "rebar3-cache"),
            "MIX_HOME": os.path.join(self.home, "mix"),
            "HEX_HOME": os.path.join(self.home, "hex"),
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        }
        argv = offline_prefix() + ["make", "--no-print-directory", "-C", os.path.join(EXAMPLES, app), "tar",
                                   "VSN=" + vsn, "OUT=" + self.out, "HTTP_PORT=" + BUILD_HTTP_PORT]
        start = time.monotonic()
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environ,
                              universal_newlines=True, timeout=600, check=False)
        self.seconds[(app, vsn)] = time.monotonic() - start
        self.logs[(app, vsn)] = proc.stdout
        assert proc.returncode == 0, "offline build of %s %s failed:\n%s" % (app, vsn, proc.stdout)
        assert proc.stdout.strip().splitlines()[-1] == self.tarball(app, vsn), proc.stdout


@pytest.fixture(scope="session")
def builds(tmp_path_factory):
    base = tmp_path_factory.mktemp("example-releases")
    home = str(base / "home")
    os.makedirs(home)
    result = Builds(str(base / "dist"), home)
    for app in APPS:
        for vsn in VERSIONS:
            result.build(app, vsn)
    print("\nexample builds (offline): " + ", ".join(
        "%s-%s %.1fs" % (app, vsn, secs) for (app, vsn), secs in sorted(result.seconds.items())))
    return result


class Tarball(object):
    def __init__(self, path):
        self.path = path
        with tarfile.open(path) as tar:
            self.names = set(member.name.lstrip("./") for member in tar.getmembers() if member.isfile())
            self._tar_path = path

    def read(self, name):
        with tarfile.open(self._tar_path) as tar:
            for member in tar.getmembers():
                if member.name.lstrip("./") == name and member.isfile():
                    return tar.extractfile(member).read()
        raise KeyError(name)

    def text(self, name):
        return self.read(name).decode("utf-8")

    def dirs(self, prefix):
        """Names of the first-level entries under prefix/ (e.g. lib -> 'crypto-5.1.2', ...)."""
        return sorted(set(n[len(prefix) + 1:].split("/")[0] for n in self.names if n.startswith(prefix + "/")))


@pytest.fixture(scope="session")
def tarballs(builds):
    return {(app, vsn): Tarball(builds.tarball(app, vsn)) for app in APPS for vsn in VERSIONS}


def http_get(port, path, timeout=2.0):
    """(status, body) of GET http://127.0.0.1:port/path, or None when nothing answers yet."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8")
    except OSError:
        return None
    finally:
        conn.close()


class RunningRelease(object):
    """A release unpacked into a directory and started in the foreground by its own start script."""

    def __init__(self, app, vsn, tarball, base):
        self.app = app
        self.vsn = vsn
        self.root = os.path.join(base, "%s-%s" % (app, vsn))
        self.sname = "ex_%s_%s" % (app.replace("hello_", ""), uuid.uuid4().hex[:8])
        self.port = free_port()
        self.epmd_port = free_port()
        self.proc = None
        self.log_path = os.path.join(base, "%s-%s.log" % (app, vsn))
        os.makedirs(self.root)
        with tarfile.open(tarball) as tar:
            tar.extractall(self.root, **({"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}))
        self._configure()

    def _configure(self):
        rel = os.path.join(self.root, "releases", self.vsn)
        sys_config = os.path.join(rel, "sys.config")
        with open(sys_config) as handle:
            text = handle.read()
        text, count = re.subn(r"\{http_port, *%s\}" % BUILD_HTTP_PORT, "{http_port, %d}" % self.port, text)
        assert count == 1, text
        text, count = re.subn(r"\{http_ip, *any\}", "{http_ip, {127,0,0,1}}", text)
        assert count == 1, text
        with open(sys_config, "w") as handle:
            handle.write(text)
        if self.app == "hello_rebar3":
            # relx takes the node name from vm.args: a unique one for this test copy.
            vm_args = os.path.join(rel, "vm.args")
            with open(vm_args) as handle:
                text = handle.read()
            text, count = re.subn(r"(?m)^-sname hello_rebar3$", "-sname " + self.sname, text)
            assert count == 1, text
            with open(vm_args, "w") as handle:
                handle.write(text)

    def environ(self):
        environ = dict(os.environ)
        environ.update({
            "ERL_EPMD_PORT": str(self.epmd_port),
            "LANG": "C.UTF-8",
            "HOME": self.root,
        })
        if self.app == "hello_elixir":
            environ.update({"RELEASE_NODE": self.sname, "RELEASE_DISTRIBUTION": "sname",
                            "RELEASE_TMP": os.path.join(self.root, "tmp")})
        return environ

    def script(self, command):
        return [os.path.join(self.root, "bin", self.app), command]

    def start(self, seconds=60):
        command = "foreground" if self.app == "hello_rebar3" else "start"
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.script(command), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.environ(), cwd=self.root,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("%s %s exited (%s) at boot:\n%s" % (self.app, self.vsn, self.proc.returncode, self.log()))
            answer = http_get(self.port, "/status")
            if answer is not None:
                return
            time.sleep(0.2)
        raise AssertionError("%s %s: no /status on port %d in %ds:\n%s" % (self.app, self.vsn, self.port, seconds, self.log()))

    def log(self):
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def stop(self):
        try:
            self._stop_node()
        finally:
            # The private epmd the node started (never the host's, which is on another port);
            # epmd refuses -kill while a node is registered, and the node is gone by now.
            if shutil.which("epmd"):
                subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=30, check=False)

    def _stop_node(self):
        if self.proc is not None and self.proc.poll() is None:
            # Not subprocess.run: relx's `stop` polls `kill -0 <beam pid>` until the VM is gone, and
            # the VM (our child in the foreground) stays a zombie until we reap it here.
            stopper = subprocess.Popen(self.script("stop"), env=self.environ(), cwd=self.root,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)
            try:
                stopper.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stopper.kill()
                stopper.wait()


@pytest.fixture
def run_release(builds, tmp_path):
    started = []

    def start(app, vsn):
        release = RunningRelease(app, vsn, builds.tarball(app, vsn), str(tmp_path))
        started.append(release)
        release.start()
        return release

    yield start
    for release in started:
        release.stop()
