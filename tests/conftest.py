import pytest

from synperf.gpu import resolve_gpu


@pytest.fixture(scope="session")
def h100():
    return resolve_gpu("h100-sxm")


@pytest.fixture(scope="session")
def a100():
    return resolve_gpu("a100-sxm4-80gb")
