"""Run a module under cProfile until it exits (SIGTERM ends the services cleanly), for
`python -m iot_tools.bench.profile`:
`PROFILE_MODULE=services.ingest_iot PROFILE_OUTPUT=out.prof python -m iot_tools.bench.profiled`.
"""

from __future__ import annotations

import cProfile
import os
import runpy


def main() -> int:
    profiler = cProfile.Profile()
    status: object = 0
    profiler.enable()
    try:
        runpy.run_module(os.environ["PROFILE_MODULE"], run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        status = exit_.code
    finally:
        profiler.disable()
        profiler.dump_stats(os.environ["PROFILE_OUTPUT"])
    return status if isinstance(status, int) else 1


if __name__ == "__main__":
    raise SystemExit(main())
