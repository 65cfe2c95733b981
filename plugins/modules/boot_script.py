#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to skunkworks.erlang_ec2
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: boot_script
short_description: Build an Erlang boot file (NAME.boot, NAME.script) from a release file
version_added: 0.1.0
description:
  - "Runs C(systools:make_script/2) with C([local, {outdir, Dir}, {path, EbinDirs}, silent]) in a local
    C(erl -noshell) (no distribution, no cookie) to build C(NAME.script) and C(NAME.boot) from C(NAME.rel)."
  - C(local) writes absolute code paths into the boot file, so it is tied to this host's layout;
    build it on the boot server that serves it, and run workers with the same OTP install path.
  - Rebuilds only when an input changed. A digest of the C(.rel), of every C(.app) file of the release's
    applications found in O(lib_dirs), of O(lib_dirs) and of the ERTS version is kept with the produced
    files' digests in C(OUTDIR/.NAME.boot_script.json); the files are replaced (atomically) only when the
    new build differs from what is there.
  - systools errors (missing application, missing C(.app) key, version mismatch) fail the module with systools' message.
author:
  - Skunkworks developers (@skunkworks)
options:
  rel_file:
    description:
      - "The release file, C(NAME.rel) (C({release, {Name, Vsn}, {erts, Vsn}, [Apps]}))."
    type: path
    required: true
  lib_dirs:
    description:
      - Directories each holding C(<app>-<vsn>/ebin) directories, searched in order, for example the release's
        C(lib) directory and the OTP library directory (C(code:lib_dir()), Debian C(/usr/lib/erlang/lib)).
    type: list
    elements: path
    required: true
  outdir:
    description:
      - Where C(NAME.boot) and C(NAME.script) are written. Defaults to the directory of O(rel_file).
    type: path
  erl:
    description:
      - Path of the C(erl) program. Defaults to the one found on E(PATH).
    type: path
  timeout:
    description:
      - Seconds allowed for each C(erl) run.
    type: int
    default: 60
attributes:
  check_mode:
    support: full
    description: Builds into a temporary directory to tell whether the files would change; writes nothing.
  diff_mode:
    support: none
    description: No diff (the boot file is binary).
"""

EXAMPLES = r"""
- name: Boot file for release 2.0.0 on the boot server
  skunkworks.erlang_ec2.boot_script:
    rel_file: /srv/erlang-ec2/releases/2.0.0/hello_cluster.rel
    lib_dirs:
      - /srv/erlang-ec2/releases/2.0.0/lib
      - /usr/lib/erlang/lib
  register: boot

- name: Workers boot with -boot {{ boot.boot | splitext | first }}
  ansible.builtin.debug:
    var: boot.boot
"""

RETURN = r"""
boot:
  description: Path of the boot file.
  returned: success
  type: str
  sample: /srv/erlang-ec2/releases/2.0.0/hello_cluster.boot
script:
  description: Path of the script file.
  returned: success
  type: str
  sample: /srv/erlang-ec2/releases/2.0.0/hello_cluster.script
release_name:
  description: Release name from the C(.rel).
  returned: success
  type: str
  sample: hello_cluster
release_version:
  description: Release version from the C(.rel).
  returned: success
  type: str
  sample: 2.0.0
inputs_digest:
  description: SHA-256 of the inputs (C(.rel), C(.app) files, O(lib_dirs), ERTS version).
  returned: success
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
app_files:
  description: The C(.app) files the digest covers.
  returned: success
  type: list
  elements: str
  sample: ["/srv/erlang-ec2/releases/2.0.0/lib/hello_cluster-2.0.0/ebin/hello_cluster.app"]
warnings_text:
  description: systools warnings, if any.
  returned: success
  type: str
  sample: ""
"""

import base64
import hashlib
import json
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_node import (
    EtfError,
    decode_etf,
    literal,
    to_text,
)

MARKER = "SKW-RESULT:"

# Reads the release: its name/version and every .app file of its applications in the path.
INPUTS = r"""
{SkwRelName, SkwRelVsn, SkwApps} = case file:consult(SkwRel) of
    {ok, [{release, {SkwN, SkwV}, {erts, _}, SkwAs}]} when is_list(SkwAs) -> {SkwN, SkwV, SkwAs};
    {ok, _} -> throw({bad_rel, <<"not a release file: expected one term {release, {Name, Vsn}, {erts, Vsn}, [Apps]}">>});
    {error, SkwE} -> throw({bad_rel, unicode:characters_to_binary(file:format_error(SkwE))})
end,
SkwAppName = fun(A) when is_tuple(A) -> atom_to_list(element(1, A));
                (A) -> throw({bad_rel, iolist_to_binary(io_lib:format("bad application entry ~0p", [A]))}) end,
SkwAppFiles = [F || A <- SkwApps, D <- SkwPath, F <- [filename:join(D, SkwAppName(A) ++ ".app")], filelib:is_regular(F)],
SkwRead = fun(F) -> case file:read_file(F) of {ok, B} -> B; {error, E} -> throw({read, unicode:characters_to_binary(F), E}) end end,
{inputs, #{release_name => unicode:characters_to_binary(SkwRelName),
           release_version => unicode:characters_to_binary(SkwRelVsn),
           erts => list_to_binary(erlang:system_info(version)),
           path => [unicode:characters_to_binary(D) || D <- SkwPath],
           files => [{unicode:characters_to_binary(F), SkwRead(F)} || F <- [SkwRel | SkwAppFiles]]}}
"""

BUILD = r"""
case systools:make_script(filename:rootname(SkwRel), [local, silent, no_warn_sasl, {outdir, SkwOut}, {path, SkwPath}]) of
    ok -> {built, <<>>};
    {ok, _, []} -> {built, <<>>};
    {ok, SkwMod, SkwW} -> {built, unicode:characters_to_binary(SkwMod:format_warning(SkwW))};
    {error, SkwMod, SkwR} -> {systools_error, unicode:characters_to_binary(SkwMod:format_error(SkwR))}
end
"""

PROGRAM = (
    "spawn(fun() -> timer:sleep(%(timeout_ms)d), io:format(\"~n" + MARKER + "timeout~n\"), halt(3) end), "
    "SkwRel = %(rel)s, SkwOut = %(out)s, "
    "SkwPath = lists:append([lists:sort(filelib:wildcard(filename:join([SkwD, \"*\", \"ebin\"]))) "
    "|| SkwD <- %(libs)s]), "
    "SkwResult = try begin %(body)s end catch throw:SkwT -> {error, SkwT}; SkwC:SkwX -> {error, {SkwC, SkwX}} end, "
    "io:format(\"~n" + MARKER + "~s~n\", [base64:encode(term_to_binary(SkwResult))]), halt(0)."
)


class BootScriptError(Exception):
    pass


def erlang_string(path):
    """A path as an Erlang string literal (a list, as systools expects), built by literal()."""
    return "unicode:characters_to_list(%s)" % literal(path)


def run_erl(module, erl, rel_file, outdir, lib_dirs, body, timeout):
    """Run the program in a local erl (no distribution); its own watchdog halts it after timeout."""
    program = PROGRAM % dict(
        rel=erlang_string(rel_file), out=erlang_string(outdir), timeout_ms=timeout * 1000,
        libs="[%s]" % ", ".join(erlang_string(d) for d in lib_dirs), body=body,
    )
    argv = [erl, "-noshell", "-noinput", "-boot", "start_clean", "-eval", program]
    returncode, stdout, stderr = module.run_command(argv, errors="surrogate_or_replace")
    for line in stdout.splitlines():
        if line.strip() == MARKER + "timeout":
            raise BootScriptError("erl did not finish within %ds" % timeout)
        if line.startswith(MARKER):
            try:
                return decode_etf(base64.b64decode(line[len(MARKER):].strip()))
            except (ValueError, EtfError) as exc:
                raise BootScriptError("cannot decode erl's answer: %s" % exc)
    raise BootScriptError("erl failed (exit %d): %s" % (returncode, (stderr + stdout)[-800:]))


def describe_error(term):
    """{error, ...} from the program -> a readable message."""
    reason = term[1]
    if isinstance(reason, tuple) and reason and reason[0] == "bad_rel":
        return "bad release file: %s" % to_text(reason[1])
    if isinstance(reason, tuple) and reason and reason[0] == "read":
        return "cannot read %s: %s" % (to_text(reason[1]), to_text(reason[2]))
    return "erl failed: %r" % (to_text(reason),)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(65536), b""):
            digest.update(block)
    return digest.hexdigest()


def inputs_digest(inputs):
    digest = hashlib.sha256()
    for part in [inputs["erts"]] + list(inputs["path"]):
        digest.update(part + b"\0")
    for name, content in inputs["files"]:
        digest.update(name + b"\0" + hashlib.sha256(content).hexdigest().encode("ascii") + b"\0")
    return digest.hexdigest()


def read_stamp(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def outputs_match(stamp, files):
    if not stamp:
        return False
    for key, path in files.items():
        if not os.path.isfile(path) or stamp.get(key) != sha256_file(path):
            return False
    return True


def install(src, dest):
    """Copy src to dest through a temporary file in dest's directory and rename (atomic for readers)."""
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".", dir=os.path.dirname(dest))
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    module = AnsibleModule(
        argument_spec=dict(
            rel_file=dict(type="path", required=True),
            lib_dirs=dict(type="list", elements="path", required=True),
            outdir=dict(type="path"),
            erl=dict(type="path"),
            timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    params = module.params
    rel_file = os.path.abspath(params["rel_file"])
    if not rel_file.endswith(".rel"):
        module.fail_json(msg="rel_file must name a NAME.rel file: %s" % rel_file)
    if not os.path.isfile(rel_file):
        module.fail_json(msg="release file %s does not exist" % rel_file)
    lib_dirs = [os.path.abspath(d) for d in params["lib_dirs"]]
    missing = [d for d in lib_dirs if not os.path.isdir(d)]
    if missing:
        module.fail_json(msg="lib_dirs not found: %s" % ", ".join(missing))
    outdir = os.path.abspath(params["outdir"] or os.path.dirname(rel_file))
    if not os.path.isdir(outdir):
        module.fail_json(msg="outdir %s is not a directory" % outdir)
    erl = params["erl"] or module.get_bin_path("erl", required=True)
    name = os.path.basename(rel_file)[:-len(".rel")]
    files = dict(script=os.path.join(outdir, name + ".script"), boot=os.path.join(outdir, name + ".boot"))
    stamp_path = os.path.join(outdir, ".%s.boot_script.json" % name)

    try:
        answer = run_erl(module, erl, rel_file, outdir, lib_dirs, INPUTS, params["timeout"])
        if answer[0] == "error":
            module.fail_json(msg=describe_error(answer))
        inputs = answer[1]
        digest = inputs_digest(inputs)
        result = dict(
            boot=files["boot"], script=files["script"], inputs_digest=digest,
            release_name=to_text(inputs["release_name"]), release_version=to_text(inputs["release_version"]),
            app_files=[to_text(f) for f, dummy in inputs["files"][1:]], warnings_text="",
        )
        stamp = read_stamp(stamp_path)
        if stamp and stamp.get("inputs") == digest and outputs_match(stamp, files):
            module.exit_json(changed=False, **result)
        build_dir = tempfile.mkdtemp(prefix="boot_script-")
        try:
            built = run_erl(module, erl, rel_file, build_dir, lib_dirs, BUILD, params["timeout"])
            if built[0] == "systools_error":
                module.fail_json(msg="systools:make_script failed for %s: %s" % (rel_file, to_text(built[1]).strip()), **result)
            if built[0] == "error":
                module.fail_json(msg=describe_error(built), **result)
            result["warnings_text"] = to_text(built[1])
            new = dict((key, os.path.join(build_dir, os.path.basename(path))) for key, path in files.items())
            new_digests = dict((key, sha256_file(path)) for key, path in new.items())
            changed = any(not os.path.isfile(files[k]) or sha256_file(files[k]) != new_digests[k] for k in files)
            if not module.check_mode:
                if changed:
                    for key in ("script", "boot"):
                        install(new[key], files[key])
                new_stamp = dict(new_digests, inputs=digest)
                if new_stamp != stamp:
                    with open(os.path.join(build_dir, "stamp"), "w") as handle:
                        json.dump(new_stamp, handle, sort_keys=True)
                    install(os.path.join(build_dir, "stamp"), stamp_path)
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
    except BootScriptError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=changed, **result)


if __name__ == "__main__":
    main()
