"""Stand-in for the get-pip.py script that ansible-test downloads.

ansible-test bootstraps pip in each of its virtual environments with a script it
fetches from a host that cannot be reached here, and it strips the environment, so
the CA bundle for the package index does not reach that pip. This stand-in uses
ensurepip, then installs what ansible-test asked for with the system CA bundle.

`python get-pip-standin.py --install` writes it under the cache name ansible-test
looks for (~/.ansible/test/cache/get_pip_<version>.py).
"""
import os
import subprocess
import sys

CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def install_standin():
    from ansible_test._internal.python_requirements import get_venv_packages
    from ansible_test._internal.config import PythonConfig  # noqa: F401  (import check only)

    class _Python:
        version = "%d.%d" % sys.version_info[:2]

    version = get_venv_packages(_Python())["pip"]
    path = os.path.expanduser("~/.ansible/test/cache/get_pip_%s.py" % version.replace(".", "_"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(__file__, "rb") as src:
        content = src.read()
    if not os.path.exists(path) or open(path, "rb").read() != content:
        with open(path, "wb") as dst:
            dst.write(content)
        print("wrote ansible-test pip bootstrap stand-in: %s" % path)


def bootstrap(args):
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
    args = [a for a in args if a not in ("--no-setuptools", "--no-wheel")]
    cert = os.environ.get("SSL_CERT_FILE") or CA_BUNDLE
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    if os.path.exists(cert):
        cmd += ["--cert", cert]
    subprocess.check_call(cmd + args)


if __name__ == "__main__":
    if sys.argv[1:] == ["--install"]:
        install_standin()
    else:
        bootstrap(sys.argv[1:])
