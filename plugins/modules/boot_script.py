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
  - Also writes C(OUTDIR/NAME.local_files), the manifest of the files a diskless node reads from its own disk
    rather than through the boot server. It lists every file under C(priv/) of every application in the boot
    script, and O(extra_local_files), each with its size, mode and MD5. Workers copy these files before they
    boot or restart into the release (docs/releases.md). It is rewritten only when its content changes.
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
  prepend_paths:
    description:
      - Code paths put in front of every C(path) instruction of the script, as C(mix release) does for an Elixir
        release's consolidated protocols (C(releases/<vsn>/consolidated)). The boot then loads the modules of
        these directories instead of the same-named ones of the applications.
    type: list
    elements: path
    default: []
  extra_local_files:
    description:
      - Files listed in the C(NAME.local_files) manifest besides the priv files, for example the release's
        C(vm.args), which C(erl) reads from local disk. A listed file that does not exist is left out.
    type: list
    elements: path
    default: []
attributes:
  check_mode:
    support: full
    description: Builds into a temporary directory to tell whether the files would change; writes nothing.
  diff_mode:
    support: none
    description: No diff (the boot file is binary).
"""

EXAMPLES = r"""
# erlang_layout: the host layout (lookup skunkworks.erlang_ec2.host_layout), as the roles read it.
- name: Boot file for release 2.0.0 on the boot server
  skunkworks.erlang_ec2.boot_script:
    rel_file: "{{ erlang_layout.releases_dir }}/2.0.0/hello_cluster.rel"
    lib_dirs:
      - "{{ erlang_layout.releases_dir }}/2.0.0/lib"
      - "{{ erlang_layout.otp_lib_dir }}"
  vars:
    erlang_layout: "{{ lookup('skunkworks.erlang_ec2.host_layout') }}"
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
local_files:
  description: Path of the manifest of the files a node reads from its own disk.
  returned: always
  type: str
  sample: /srv/erlang-ec2/releases/2.0.0/hello_cluster.local_files
local_files_count:
  description: How many files the manifest lists.
  returned: success
  type: int
  sample: 3
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

from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_etf import EtfError, decode_etf, to_text
from ansible_collections.skunkworks.erlang_ec2.plugins.module_utils.erlang_terms import literal

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
SkwPrependTo = fun(SkwName) ->
    SkwScript = filename:join(SkwOut, SkwName ++ ".script"),
    {ok, [{script, SkwId, SkwInstrs}]} = file:consult(SkwScript),
    SkwNew = [case I of {path, SkwPs} -> {path, SkwPrepend ++ SkwPs}; _ -> I end || I <- SkwInstrs],
    ok = file:write_file(SkwScript, io_lib:format("~p.~n", [{script, SkwId, SkwNew}])),
    ok = systools:script2boot(filename:join(SkwOut, SkwName))
end,
SkwWarn = case systools:make_script(filename:rootname(SkwRel), [local, silent, no_warn_sasl, {outdir, SkwOut}, {path, SkwPath}]) of
    ok -> {ok, <<>>};
    {ok, _, []} -> {ok, <<>>};
    {ok, SkwMod, SkwW} -> {ok, unicode:characters_to_binary(SkwMod:format_warning(SkwW))};
    {error, SkwMod, SkwR} -> {systools_error, unicode:characters_to_binary(SkwMod:format_error(SkwR))}
end,
case SkwWarn of
    {ok, SkwText} when SkwPrepend =:= [] -> {built, SkwText};
    {ok, SkwText} -> SkwPrependTo(filename:basename(SkwRel, ".rel")), {built, SkwText};
    _ -> SkwWarn
end
"""

# The files a diskless node reads from its own disk (every priv/ file of every application in the
# boot script, and the extra files), as the manifest the worker's sync reads (docs/releases.md).
MANIFEST = r"""
SkwScript = filename:join(SkwOut, filename:basename(SkwRel, ".rel") ++ ".script"),
{ok, [{script, {SkwN, SkwV}, SkwInstrs}]} = case file:consult(SkwScript) of
    {ok, _} = SkwOk -> SkwOk;
    {error, SkwE} -> throw({read, unicode:characters_to_binary(SkwScript), SkwE})
end,
SkwDirs = lists:usort([filename:join(filename:dirname(D), "priv") || {path, Ps} <- SkwInstrs, D <- Ps,
                       filename:basename(D) =:= "ebin"]),
SkwFiles = lists:usort(lists:append([filelib:fold_files(D, ".*", true, fun(F, A) -> [F | A] end, []) || D <- SkwDirs])
                       ++ [F || F <- SkwExtra, filelib:is_regular(F)]),
SkwEntry = fun(F) ->
    {ok, B} = file:read_file(F),
    {ok, Info} = file:read_file_info(F),
    Md5 = list_to_binary([io_lib:format("~2.16.0b", [X]) || <<X>> <= erlang:md5(B)]),
    {file, F, byte_size(B), element(8, Info) band 8#777, binary_to_list(Md5)}
end,
SkwTerms = [{local_files, 1, SkwN, SkwV} | [SkwEntry(F) || F <- SkwFiles]],
{manifest, iolist_to_binary([io_lib:format("~p.~n", [T]) || T <- SkwTerms]), length(SkwFiles)}
"""

PROGRAM = (
    "spawn(fun() -> timer:sleep(%(timeout_ms)d), io:format(\"~n" + MARKER + "timeout~n\"), halt(3) end), "
    "SkwRel = %(rel)s, SkwOut = %(out)s, SkwPrepend = %(prepend)s, SkwExtra = %(extra)s, "
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


def erlang_strings(paths):
    return "[%s]" % ", ".join(erlang_string(p) for p in paths)


def run_erl(module, erl, rel_file, outdir, lib_dirs, body, timeout, prepend=(), extra=()):
    """Run the program in a local erl (no distribution); its own watchdog halts it after timeout."""
    program = PROGRAM % dict(
        rel=erlang_string(rel_file), out=erlang_string(outdir), timeout_ms=timeout * 1000,
        libs=erlang_strings(lib_dirs), body=body, prepend=erlang_strings(prepend), extra=erlang_strings(extra),
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


def inputs_digest(inputs, prepend=()):
    digest = hashlib.sha256()
    parts = [inputs["erts"]] + list(inputs["path"])
    if prepend:
        parts += [b"prepend"] + [p.encode("utf-8") for p in prepend]
    for part in parts:
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
            prepend_paths=dict(type="list", elements="path", default=[]),
            extra_local_files=dict(type="list", elements="path", default=[]),
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

    prepend = [os.path.abspath(d) for d in params["prepend_paths"]]
    extra = [os.path.abspath(f) for f in params["extra_local_files"]]
    manifest_path = os.path.join(outdir, name + ".local_files")
    result = dict(local_files=manifest_path)
    try:
        answer = run_erl(module, erl, rel_file, outdir, lib_dirs, INPUTS, params["timeout"])
        if answer[0] == "error":
            module.fail_json(msg=describe_error(answer))
        inputs = answer[1]
        digest = inputs_digest(inputs, prepend)
        result.update(
            boot=files["boot"], script=files["script"], inputs_digest=digest,
            release_name=to_text(inputs["release_name"]), release_version=to_text(inputs["release_version"]),
            app_files=[to_text(f) for f, dummy in inputs["files"][1:]], warnings_text="",
        )
        build_dir = tempfile.mkdtemp(prefix="boot_script-")
        try:
            changed, script_dir = build(module, erl, rel_file, lib_dirs, files, stamp_path, digest, build_dir,
                                        prepend, extra, result)
            changed = write_manifest(module, erl, rel_file, script_dir, lib_dirs, manifest_path, prepend, extra,
                                     result, build_dir) or changed
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
    except BootScriptError as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(changed=changed, **result)


def build(module, erl, rel_file, lib_dirs, files, stamp_path, digest, build_dir, prepend, extra, result):
    """(changed, directory holding the script now): builds only when the inputs or outputs changed."""
    stamp = read_stamp(stamp_path)
    outdir = os.path.dirname(files["boot"])
    if stamp and stamp.get("inputs") == digest and outputs_match(stamp, files):
        return False, outdir
    built = run_erl(module, erl, rel_file, build_dir, lib_dirs, BUILD, module.params["timeout"], prepend, extra)
    if built[0] == "systools_error":
        module.fail_json(msg="systools:make_script failed for %s: %s" % (rel_file, to_text(built[1]).strip()), **result)
    if built[0] == "error":
        module.fail_json(msg=describe_error(built), **result)
    result["warnings_text"] = to_text(built[1])
    new = dict((key, os.path.join(build_dir, os.path.basename(path))) for key, path in files.items())
    new_digests = dict((key, sha256_file(path)) for key, path in new.items())
    changed = any(not os.path.isfile(files[k]) or sha256_file(files[k]) != new_digests[k] for k in files)
    if module.check_mode:
        return changed, build_dir
    if changed:
        for key in ("script", "boot"):
            install(new[key], files[key])
    new_stamp = dict(new_digests, inputs=digest)
    if new_stamp != stamp:
        with open(os.path.join(build_dir, "stamp"), "w") as handle:
            json.dump(new_stamp, handle, sort_keys=True)
        install(os.path.join(build_dir, "stamp"), stamp_path)
    return changed, outdir


def write_manifest(module, erl, rel_file, script_dir, lib_dirs, manifest_path, prepend, extra, result, build_dir):
    """Writes NAME.local_files when its content differs; True when it did (or would, in check mode)."""
    answer = run_erl(module, erl, rel_file, script_dir, lib_dirs, MANIFEST, module.params["timeout"], prepend, extra)
    if answer[0] == "error":
        module.fail_json(msg=describe_error(answer), **result)
    content, count = answer[1], answer[2]
    result["local_files_count"] = count
    try:
        with open(manifest_path, "rb") as handle:
            if handle.read() == content:
                return False
    except (IOError, OSError):
        pass
    if not module.check_mode:
        tmp = os.path.join(build_dir, "manifest")
        with open(tmp, "wb") as handle:
            handle.write(content)
        install(tmp, manifest_path)
    return True


if __name__ == "__main__":
    main()
