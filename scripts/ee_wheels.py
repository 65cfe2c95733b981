"""Download, on the host, every Python package `make ee` installs in the execution environment (docs/ee.md).

The build containers then install with pip's --no-index from this directory (make ee mounts it and a pip.conf
into each build step): no index is needed inside the build, and nothing of it stays in the image.
The list is what ansible-builder asks pip for: ansible-core and ansible-runner, the EE definition's Python
packages, the collections' requirements.txt (less the definition's exclusions), its container init (dumb-init)
and what its builder stage installs (bindep, pyyaml, packaging).
usage: python scripts/ee_wheels.py EE_FILE COLLECTION_DIR... OUT_DIR  (EE_PYTHON_VERSION: the EE's Python, default 3.11)
"""

import os
import re
import subprocess
import sys

import yaml

BUILDER_STAGE = ["bindep", "pyyaml", "packaging"]
DEFAULT_INIT = "dumb-init==1.2.5"  # ansible-builder's default options.container_init.package_pip


def requirement_name(line):
    return re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].strip().lower().replace("_", "-")


def main(ee_file, collection_dirs, out_dir):
    with open(ee_file) as handle:
        ee = yaml.safe_load(handle)
    deps = ee.get("dependencies", {})
    excluded = {requirement_name(n) for n in deps.get("exclude", {}).get("python", [])}
    wanted = [deps["ansible_core"]["package_pip"], deps["ansible_runner"]["package_pip"]]
    wanted += deps.get("python", [])
    for directory in collection_dirs:
        path = os.path.join(directory, "requirements.txt")
        if os.path.exists(path):
            with open(path) as handle:
                for line in handle:
                    line = line.split("#", 1)[0].strip()
                    if line and requirement_name(line) not in excluded:
                        wanted.append(line)
    wanted.append(ee.get("options", {}).get("container_init", {}).get("package_pip", DEFAULT_INIT))
    wanted += BUILDER_STAGE
    python = os.environ.get("EE_PYTHON_VERSION", "3.11")
    os.makedirs(out_dir, exist_ok=True)
    # The EE's interpreter (Debian 12: CPython 3.11, glibc 2.36), not the host's: binary wheels only.
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", out_dir, "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "--abi", "cp%s" % python.replace(".", ""), "--abi", "abi3", "--abi", "none"]
    for platform in ("manylinux_2_36_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                     "manylinux1_x86_64", "linux_x86_64", "any"):
        cmd += ["--platform", platform]
    print("ee-wheels: %s" % " ".join(wanted), flush=True)
    proc = subprocess.run(cmd + wanted, check=False, stderr=subprocess.PIPE, text=True)
    # Not the host's local index directories pip.conf may name, which pip warns about for every package.
    sys.stderr.write("".join(l + "\n" for l in proc.stderr.splitlines() if "is neither a file nor a directory" not in l))
    return proc.returncode


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:-1], sys.argv[-1]))
