"""Constants and the hand-made PKI of the TLS self-join tests (shared by the conftest and the test files)."""

import os
import subprocess
import sys

REGION = "eu-west-1"
# The interpreter that runs the script: this one, or (TLS_JOIN_PYTHON) one with the hosts' boto3 (Debian's 1.26).
SCRIPT_PYTHON = os.environ.get("TLS_JOIN_PYTHON") or sys.executable
CLUSTER = "tj1"
PREFIX = "/erlang-ec2"


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_ca(d, name, signer=None, pathlen0=False):
    """An EC P-256 CA (self-signed) or an intermediate (signed by signer) in d/<name>.pem, .key."""
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name + ".key", cwd=d)
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("[v3]\nbasicConstraints = critical, CA:TRUE%s\nkeyUsage = critical, keyCertSign, cRLSign\n"
                "subjectKeyIdentifier = hash\n" % (", pathlen:0" if pathlen0 else ""))
    if signer is None:
        openssl("req", "-new", "-x509", "-key", name + ".key", "-subj", "/CN=" + name, "-days", "30",
                "-extensions", "v3", "-config", ext, "-out", name + ".pem", cwd=d)
        return
    openssl("req", "-new", "-key", name + ".key", "-subj", "/CN=" + name, "-out", name + ".csr", cwd=d)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", signer + ".pem", "-CAkey", signer + ".key",
            "-set_serial", "7", "-days", "30", "-extfile", ext, "-extensions", "v3", "-out", name + ".pem", cwd=d)


def make_leaf(d, name, ip, signer):
    """A node certificate as the erlang role makes them (root-signed), for the boot server node."""
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name + ".key", cwd=d)
    openssl("req", "-new", "-key", name + ".key", "-subj", "/CN=%s@%s" % (name, ip), "-out", name + ".csr", cwd=d)
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write("[leaf]\nbasicConstraints = critical, CA:FALSE\nextendedKeyUsage = serverAuth, clientAuth\n"
                "subjectAltName = IP:%s, DNS:%s\n" % (ip, ip))
    openssl("x509", "-req", "-in", name + ".csr", "-CA", signer + ".pem", "-CAkey", signer + ".key", "-set_serial", "9",
            "-days", "30", "-extfile", name + ".ext", "-extensions", "leaf", "-out", name + ".pem", cwd=d)
