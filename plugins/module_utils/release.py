# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a release is and what it needs on a diskless node (docs/releases.md).

A release is what `rebar3 tar`/relx or `mix release` build: `lib/<app>-<vsn>/`,
`releases/<vsn>/<name>.rel`, optionally `sys.config`, `vm.args`, `consolidated/` (Elixir)
and `erts-<vsn>/` (include_erts). This module reads one, from a directory, with no Erlang VM.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shlex
import gzip
import tarfile
import zlib

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_terms import TermSyntaxError, consult

# vm.args flags the collection sets itself on every node; a release's own are dropped
# (with a warning). The number is how many arguments each takes (None: all up to the next flag).
OWNED_FLAGS = {
    "-name": 1, "-sname": 1, "-setcookie": 1, "-boot": 1, "-boot_var": 2, "-mode": 1,
    "-loader": 1, "-hosts": None, "-config": None, "-args_file": 1,
}
# Boot scripts that relx and mix write beside the release's own .rel.
OTHER_REL_FILES = ("start.rel", "start_clean.rel", "no_dot_erlang.rel")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")
APP_DIR_RE = re.compile(r"^([a-z][A-Za-z0-9_]*)-([^-/]+)$")
TARBALL_RE = re.compile(r".*\.(tar\.gz|tgz|tar)$")


class ReleaseError(Exception):
    pass


def check_gzip_stream(tarball):
    """Read a gzip tarball to its end once: only there is its CRC checked, and tarfile stops reading at the
    archive's last member, so a damaged byte in a file's data would otherwise unpack without an error."""
    with open(tarball, "rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            return
    with gzip.open(tarball, "rb") as stream:
        while stream.read(1024 * 1024):
            pass


def unpack(tarball, dest):
    """Extract a release tarball into dest, refusing members that would land outside it."""
    try:
        check_gzip_stream(tarball)
        with tarfile.open(tarball) as tar:
            root = os.path.realpath(dest)
            for member in tar.getmembers():
                target = os.path.realpath(os.path.join(root, member.name))
                if not (target == root or target.startswith(root + os.sep)) or member.isdev():
                    raise ReleaseError("%s: member %s would be written outside the release" % (tarball, member.name))
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python < 3.10.12: the members were checked above
                tar.extractall(dest)
    # A truncated gzip stream ends in EOFError, a damaged one in zlib.error: a refusal like any other.
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ReleaseError("cannot unpack %s: %s" % (tarball, exc))


def split_args(text):
    """vm.args as erlexec reads it: lines of tokens, `#` comments, quotes kept as written."""
    lines = []
    for raw in text.splitlines():
        lexer = shlex.shlex(raw, posix=False)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            lines.append(list(lexer))
        except ValueError as exc:
            raise ReleaseError("vm.args line %r: %s" % (raw, exc))
    return lines


def filter_vm_args(text):
    """(content, dropped): the release's vm.args without the flags the collection owns.

    `dropped` names each owned flag found (never its value: `-setcookie` carries a secret).
    """
    kept_lines = []
    dropped = []
    for tokens in split_args(text):
        kept = []
        skip = 0
        for token in tokens:
            if skip and not token.startswith(("-", "+")):
                skip -= 1
                continue
            skip = 0
            if token in OWNED_FLAGS:
                dropped.append(token)
                skip = OWNED_FLAGS[token] if OWNED_FLAGS[token] is not None else -1
                continue
            kept.append(token)
        if kept:
            kept_lines.append(" ".join(kept))
    return "".join(line + "\n" for line in kept_lines), sorted(set(dropped))


def _app_entries(rel_file, apps):
    result = {}
    for entry in apps:
        if isinstance(entry, tuple) and len(entry) >= 2 and isinstance(entry[1], str):
            result[str(entry[0])] = entry[1]
        else:
            raise ReleaseError("%s: bad application entry %r" % (rel_file, entry))
    return result


def consult_file(path):
    """The terms of an Erlang term file (file:consult/1), or ReleaseError naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return consult(handle.read())
    except (OSError, UnicodeDecodeError, TermSyntaxError) as exc:
        raise ReleaseError("cannot read %s: %s" % (path, exc))


def read_rel(rel_file):
    """(name, version, erts, {app: vsn}) from a .rel file."""
    terms = consult_file(rel_file)
    shape = "%s is not a release file: expected one term {release, {Name, Vsn}, {erts, Vsn}, [Apps]}" % rel_file
    try:
        [(tag, (name, vsn), (erts_tag, erts), apps)] = terms
    except (ValueError, TypeError):
        raise ReleaseError(shape)
    if tag != "release" or erts_tag != "erts" or not isinstance(apps, list):
        raise ReleaseError(shape)
    return name, vsn, erts, _app_entries(rel_file, apps)


def _find_rel(root):
    releases = os.path.join(root, "releases")
    found = []
    if os.path.isdir(releases):
        for vsn in sorted(os.listdir(releases)):
            vdir = os.path.join(releases, vsn)
            if os.path.isdir(vdir):
                found.extend(os.path.join(vdir, f) for f in sorted(os.listdir(vdir))
                             if f.endswith(".rel") and f not in OTHER_REL_FILES)
    if len(found) != 1:
        raise ReleaseError("a release must hold exactly one releases/<vsn>/<name>.rel; found %s"
                           % (", ".join(os.path.relpath(f, root) for f in found) or "none"))
    return found[0]


def _bundled(root):
    lib = os.path.join(root, "lib")
    if not os.path.isdir(lib):
        raise ReleaseError("a release must have a lib/ directory of <app>-<vsn> applications")
    return sorted(d for d in os.listdir(lib) if APP_DIR_RE.match(d) and os.path.isdir(os.path.join(lib, d, "ebin")))


def _included_erts(root):
    erts = sorted(d[len("erts-"):] for d in os.listdir(root) if d.startswith("erts-") and os.path.isdir(os.path.join(root, d)))
    if len(erts) > 1:
        raise ReleaseError("the release bundles several ERTS: %s" % ", ".join(erts))
    return erts[0] if erts else ""


def _config_providers(sys_config):
    """True when sys.config asks Elixir's config providers to run at boot (config/runtime.exs)."""
    terms = consult_file(sys_config)
    if len(terms) != 1 or not isinstance(terms[0], list):
        raise ReleaseError("%s must hold one list of {Application, [{Key, Value}]}" % sys_config)
    for entry in terms[0]:
        if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == "elixir" and isinstance(entry[1], list):
            for pair in entry[1]:
                if isinstance(pair, tuple) and len(pair) == 2 and pair[0] == "config_provider_init":
                    return True
    return False


def inspect(root):
    """Everything the collection needs to know about the release unpacked in root."""
    rel_file = _find_rel(root)
    name, version, erts, apps = read_rel(rel_file)
    vdir = os.path.dirname(rel_file)
    if not NAME_RE.match(name) or not VERSION_RE.match(version) or os.path.basename(vdir) != version:
        where = os.path.relpath(rel_file, root)
        raise ReleaseError("%s names release %r version %r: the name must match %s and the version %s and its "
                           "releases/<vsn> directory" % (where, name, version, NAME_RE.pattern, VERSION_RE.pattern))
    if not apps:
        raise ReleaseError("%s lists no applications" % rel_file)
    for src in ("vm.args.src", "sys.config.src"):
        if os.path.exists(os.path.join(vdir, src)):
            raise ReleaseError(
                "releases/%s/%s: OS-variable substitution (relx's .src files) is done by the release's start script, "
                "which diskless workers do not run. Render it at build time (a plain %s) and build again." % (
                    version, src, src[:-len(".src")]))
    sys_config = os.path.join(vdir, "sys.config")
    if os.path.isfile(sys_config) and _config_providers(sys_config):
        raise ReleaseError(
            "releases/%s/sys.config runs Elixir config providers (config/runtime.exs): they rewrite sys.config and "
            "reboot the node from its start script, which diskless workers do not run. Put the configuration in "
            "config/config.exs (build time) and build again." % version)
    vm_args_file = os.path.join(vdir, "vm.args")
    vm_args, dropped = "", []
    if os.path.isfile(vm_args_file):
        with open(vm_args_file, encoding="utf-8", errors="replace") as handle:
            vm_args, dropped = filter_vm_args(handle.read())
    consolidated = os.path.join(vdir, "consolidated")
    bundled = _bundled(root)
    return {
        "name": name,
        "version": version,
        "erts": erts,
        "applications": apps,
        "bundled": bundled,
        "priv": [d for d in bundled if os.path.isdir(os.path.join(root, "lib", d, "priv"))],
        "release_dir": root,
        "rel_file": rel_file,
        "sys_config": sys_config if os.path.isfile(sys_config) else "",
        "vm_args": {"source": vm_args_file if os.path.isfile(vm_args_file) else "", "content": vm_args, "dropped": dropped},
        "consolidated": consolidated if os.path.isdir(consolidated) else "",
        "erts_included": _included_erts(root),
    }
