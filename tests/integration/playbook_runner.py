"""The one way the integration suites run Ansible: `ansible-playbook` (and ad-hoc `ansible`) as a user runs
them, from the repository root, with the collection as installed under .collections/.

The secrets rules every suite keeps:
- a secret (the Erlang cookie) is never on a command line nor in the environment: it is written to a
  private (0600) file first, either a vars file passed as `-e @FILE` (`vars_files`) or the playbook
  itself (`write_play`);
- `extra_vars` go on the command line (one JSON `-e` each): they must hold no secret;
- the output is returned as Ansible printed it (and appended to `log`), so that tests can assert the
  cookie is not in it.
"""

import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.dirname(sys.executable)
COLLECTIONS = os.path.join(ROOT, ".collections")
# Generous: only there so that a hanging run fails the test; nothing asserts on time.
PLAYBOOK_TIMEOUT = 1200
RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def parse_recap(stdout):
    """{host: {"ok", "changed", "unreachable", "failed"}} from an ansible-playbook PLAY RECAP."""
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3)), "unreachable": int(m.group(4)), "failed": int(m.group(5))}
            for m in RECAP_RE.finditer(stdout)}


class PlaybookResult:
    """One Ansible run: `returncode`, `stdout`, `stderr` (as subprocess.CompletedProcess), its recap and time."""

    def __init__(self, argv, proc, elapsed):
        self.args = argv
        self.returncode = proc.returncode
        self.stdout = proc.stdout or ""
        self.stderr = proc.stderr or ""
        self.elapsed = elapsed
        self.recap = parse_recap(self.stdout)

    @property
    def rc(self):
        return self.returncode

    @property
    def out(self):
        return self.stdout

    @property
    def changed(self):
        return sum(host["changed"] for host in self.recap.values())

    def tail(self, lines=60):
        return "\n".join(self.stdout.splitlines()[-lines:])

    def __repr__(self):
        return "%s failed (%d):\n%s\n%s" % (" ".join(map(str, self.args)), self.returncode, self.stdout[-6000:], self.stderr[-3000:])


def ansible_env(base=None, **overrides):
    """`base` (default: this process's environment) with the collection path, no colours, the venv's tools first."""
    env = dict(os.environ if base is None else base)
    env.update(ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1",
               PATH=BIN + os.pathsep + env.get("PATH", ""))
    env.update(overrides)
    return env


def write_private(path, text):
    """Write `text` to a new 0600 file (a vars file or playbook that may hold the cookie); returns the path."""
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def write_play(path, plays):
    """A playbook file (JSON is YAML) holding `plays`, private: module arguments in it may hold the cookie."""
    return write_private(path, json.dumps(plays))


def run(argv, env=None, timeout=PLAYBOOK_TIMEOUT, check=False, log=None, merge_stderr=False):
    """Run one Ansible command from the repository root; a PlaybookResult (AssertionError if `check` and it failed)."""
    argv = [str(arg) for arg in argv]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=ansible_env() if env is None else env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, universal_newlines=True,
                          timeout=timeout, check=False)
    result = PlaybookResult(argv, proc, time.monotonic() - started)
    if log:
        with open(str(log), "a") as handle:
            handle.write("$ %s\n%s\n%s\n" % (" ".join(argv), result.stdout, result.stderr))
    if check and result.returncode != 0:
        raise AssertionError(repr(result))
    return result


def options(inventory=None, vars_files=(), extra_vars=None, check_mode=False, diff=False, verbosity=0):
    """The command-line options common to ansible-playbook and ansible."""
    argv = ["-i", str(inventory)] if inventory else []
    for path in vars_files:
        argv += ["-e", "@%s" % path]
    for key, value in (extra_vars or {}).items():
        argv += ["-e", json.dumps({key: value})]
    argv += ["--check"] if check_mode else []
    argv += ["--diff"] if diff else []
    argv += ["-" + "v" * verbosity] if verbosity else []
    return argv


def run_playbook(playbook, *args, env=None, timeout=PLAYBOOK_TIMEOUT, check=False, log=None, merge_stderr=False, **opts):
    """ansible-playbook PLAYBOOK [options] ARGS; `opts` are those of options()."""
    argv = [os.path.join(BIN, "ansible-playbook"), playbook] + options(**opts) + list(args)
    return run(argv, env=env, timeout=timeout, check=check, log=log, merge_stderr=merge_stderr)


def run_adhoc(pattern, module, module_args, *args, env=None, timeout=PLAYBOOK_TIMEOUT, check=False, log=None, merge_stderr=False, **opts):
    """ansible PATTERN -m MODULE [-a MODULE_ARGS] [options] ARGS (no secret in MODULE_ARGS: it is a command line)."""
    argv = [os.path.join(BIN, "ansible"), pattern, "-m", module] + (["-a", module_args] if module_args else [])
    argv += options(**opts) + list(args)
    return run(argv, env=env, timeout=timeout, check=check, log=log, merge_stderr=merge_stderr)
