"""Issue 15 point 4: a gateway started with another server secret against the same database
refuses to start, in one line naming the secret's variable (or file), instead of answering 401
to every valid key.

Real start-ups of `python -m services`: one SQLite data directory (TOLLGATE_SECRET_KEY, then the
generated secret.key), and one PostgreSQL schema shared by two replicas.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from tests.support.gateway import ADMIN_KEY
from tests.support.postgres import postgres_url  # noqa: F401  (fixture)
from tests.support.procs import Proc, base_env, free_port, run_module

SECRET_A = "h15-secret-a-0123456789abcdef0123456789abcdef"
SECRET_B = "h15-secret-b-0123456789abcdef0123456789abcdef"


def env(home: Path, data_dir: Path, secret: str | None, **extra: str) -> tuple[dict[str, str], str]:
    port = free_port()
    e = base_env(home, TOLLGATE_ADMIN_KEY=ADMIN_KEY, TOLLGATE_DATA_DIR=str(data_dir),
                 TOLLGATE_HTTP_ADDR=f"127.0.0.1:{port}", TOLLGATE_GRPC_ADDR=f"127.0.0.1:{free_port()}",
                 TOLLGATE_LOG_LEVEL="WARNING", **extra)
    if secret is not None:
        e["TOLLGATE_SECRET_KEY"] = secret
    return e, f"http://127.0.0.1:{port}"


async def ready_or_exit(proc: Proc, url: str, timeout: float = 30.0) -> int | None:
    """None once /health/ready answers 200, or the exit code if the process ends first."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    async with httpx.AsyncClient(timeout=1.0) as http:
        while loop.time() < end:
            if proc.proc.returncode is not None:
                return proc.proc.returncode
            try:
                if (await http.get(url + "/health/ready")).status_code == 200:
                    return None
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"neither ready nor exited after {timeout} s: {proc.stderr()[-2000:]}")


async def stop(proc: Proc) -> None:
    proc.signal(signal.SIGTERM)
    await proc.wait(15.0)


def assert_refused_in_one_line(proc: Proc, code: int | None, names: str) -> None:
    assert code == 2, (code, proc.stderr()[-2000:])
    err = proc.stderr()
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("tollgate: cannot start:")]
    assert len(lines) == 1, err
    assert names in lines[0] and "first started with" in lines[0], lines[0]
    assert SECRET_A not in err and SECRET_B not in err


async def create_key(url: str) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        r = await http.post("/api/admin/keys", headers={"X-Admin-Key": ADMIN_KEY},
                            json={"name": "h15", "email": "h15@example.com", "tier": "basic"})
        assert r.status_code == 201, r.text
        return r.json()["key"]


async def key_works(url: str, key: str) -> bool:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return (await http.get("/v1/models", headers={"Authorization": "Bearer " + key})).status_code == 200


async def test_sqlite_another_secret_refuses_to_start_naming_it(tmp_path):
    data = tmp_path / "data"
    e, url = env(tmp_path, data, SECRET_A)
    async with run_module("services", env=e, cwd=tmp_path, name="first") as first:
        assert await ready_or_exit(first, url) is None
        key = await create_key(url)
        assert await key_works(url, key)
        await stop(first)

    e, url = env(tmp_path, data, SECRET_B)
    async with run_module("services", env=e, cwd=tmp_path, name="other-secret") as other:
        assert_refused_in_one_line(other, await ready_or_exit(other, url), "TOLLGATE_SECRET_KEY")

    e, url = env(tmp_path, data, SECRET_A)  # the original secret still starts, and its key works
    async with run_module("services", env=e, cwd=tmp_path, name="again") as again:
        assert await ready_or_exit(again, url) is None
        assert await key_works(url, key)
        await stop(again)


async def test_sqlite_a_replaced_secret_file_refuses_to_start_naming_the_file(tmp_path):
    data = tmp_path / "data"
    e, url = env(tmp_path, data, None)
    async with run_module("services", env=e, cwd=tmp_path, name="first") as first:
        assert await ready_or_exit(first, url) is None
        await stop(first)
    secret_file = data / "secret.key"
    assert secret_file.exists()
    secret_file.unlink()  # lost: the next start would make a new one

    e, url = env(tmp_path, data, None)
    async with run_module("services", env=e, cwd=tmp_path, name="new-file") as other:
        assert_refused_in_one_line(other, await ready_or_exit(other, url), str(secret_file))


async def test_postgres_replica_with_another_secret_refuses_while_the_first_serves(tmp_path, postgres_url):  # noqa: F811
    e1, url1 = env(tmp_path / "r1", tmp_path / "r1" / "data", SECRET_A, DATABASE_URL=postgres_url)
    e2, url2 = env(tmp_path / "r2", tmp_path / "r2" / "data", SECRET_B, DATABASE_URL=postgres_url)
    e3, url3 = env(tmp_path / "r3", tmp_path / "r3" / "data", SECRET_A, DATABASE_URL=postgres_url)
    for d in ("r1", "r2", "r3"):
        (tmp_path / d).mkdir()
    async with run_module("services", env=e1, cwd=tmp_path / "r1", name="r1") as r1:
        assert await ready_or_exit(r1, url1) is None
        key = await create_key(url1)
        async with run_module("services", env=e2, cwd=tmp_path / "r2", name="r2") as r2:
            assert_refused_in_one_line(r2, await ready_or_exit(r2, url2), "TOLLGATE_SECRET_KEY")
        # A replica with the shared secret joins and accepts the first one's key.
        async with run_module("services", env=e3, cwd=tmp_path / "r3", name="r3") as r3:
            assert await ready_or_exit(r3, url3) is None
            assert await key_works(url3, key)
            await stop(r3)
        await stop(r1)


@pytest.mark.parametrize("first,second,same", [(b"a" * 32, b"a" * 32, True), (b"a" * 32, b"b" * 32, False)])
def test_fingerprint_is_a_mac_of_a_constant(first, second, same):
    from services.auth.secrets import derive, secret_fingerprint

    fa, fb = (secret_fingerprint(derive(s, "api-key-pepper")) for s in (first, second))
    assert (fa == fb) is same
    pepper = derive(first, "api-key-pepper")
    assert fa.startswith("v1:") and len(fa) == 3 + 64 and pepper.hex()[:16] not in fa
