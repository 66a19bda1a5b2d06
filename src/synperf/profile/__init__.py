"""synperf.profile: GPU profiling harness (run on an NVIDIA GPU).

Importing this package is cheap: torch / triton / pyarrow are imported only
by the submodules that need them (harness, ops, triton_*, tables).

    from synperf.profile.plans import plan
    from synperf.profile.harness import profile_cases, measure_device_floor
"""

from .plans import plan, plan_many  # noqa: F401  (pure Python)


def profile_cases(*args, **kwargs):
    from .harness import profile_cases as _pc

    return _pc(*args, **kwargs)


def measure_device_floor(*args, **kwargs):
    from .harness import measure_device_floor as _mf

    return _mf(*args, **kwargs)


__all__ = ["plan", "plan_many", "profile_cases", "measure_device_floor"]
