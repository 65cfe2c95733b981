import importlib.util
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))
# The collection, for its inventory plugin (make puts PYTHONPATH there too).
sys.path.insert(0, os.path.join(ROOT, ".collections"))


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def generator():
    """scripts/awx_surveys.py as a module."""
    spec = importlib.util.spec_from_file_location("awx_surveys", os.path.join(ROOT, "scripts", "awx_surveys.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
