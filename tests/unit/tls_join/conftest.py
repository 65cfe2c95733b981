# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host script erlang_ec2_tls_join.py is not a package module: loaded from its file."""
import importlib.util
import os

import pytest

SCRIPT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                       "roles", "erlang", "files", "erlang_ec2_tls_join.py"))


def load_script():
    spec = importlib.util.spec_from_file_location("erlang_ec2_tls_join", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def tj():
    return load_script()
