"""Kernel families. Each module here is one family: it parses its call, and decomposes it into
launches of tasks from the kernel's own tiling logic. A family module defines:

- ``FAMILY`` (str), ``LIBRARIES`` (tuple of str), ``DTYPES`` (tuple of str), ``FIELDS`` (set of its own field names)
- ``parse(obj, dtype, library) -> Call``: validate the family's fields (raises InputError naming the field)
- ``decompose(call, gpu) -> tuple[Launch, ...]``

Families are found by module name, so adding a kernel touches one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from types import ModuleType


@lru_cache(maxsize=1)
def families() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found[module.FAMILY] = module
    return dict(sorted(found.items()))
