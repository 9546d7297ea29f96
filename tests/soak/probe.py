"""`python -m tests.soak.probe`: `python -m services` plus a task writing its asyncio task count to $SOAK_PROBE.

Only the process itself can count its tasks; everything else the soak reads from /proc
(tests/soak/figures.py). The probe's own task is one of the counted tasks, constant throughout.
"""

from __future__ import annotations

import asyncio
import os


async def _report(path: str) -> None:
    tmp = path + ".tmp"
    while True:
        with open(tmp, "w") as f:
            f.write(f"{len(asyncio.all_tasks())}\n")
        os.replace(tmp, path)
        await asyncio.sleep(0.5)


def _die_with_parent() -> None:
    """Linux: SIGTERM this gateway when the soak driver that started it dies, even by SIGKILL."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


def main() -> None:
    import services.__main__ as entry

    _die_with_parent()

    serve = entry.serve

    async def serve_with_probe(*args, **kwargs):
        task = asyncio.create_task(_report(os.environ["SOAK_PROBE"]))
        try:
            return await serve(*args, **kwargs)
        finally:
            task.cancel()

    entry.serve = serve_with_probe
    entry.main()


if __name__ == "__main__":
    main()
