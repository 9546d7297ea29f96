"""The `tollgate` command line against a real gateway's gRPC port (in a subprocess)."""

from __future__ import annotations

import asyncio
import json
import sys

from tests.support.gateway import ADMIN_KEY, config, run_gateway


async def cli(target: str, *args: str, api_key: str = "") -> tuple[int, str, str]:
    argv = [sys.executable, "-m", "services.cli", "--addr", target, "--admin-key", ADMIN_KEY]
    if api_key:
        argv += ["--api-key", api_key]
    proc = await asyncio.create_subprocess_exec(*argv, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_keys_create_list_revoke_usage_and_chat(tmp_path):
    async with run_gateway(config(tmp_path, demo="on")) as gw:
        target = gw.rt.grpc_target
        code, out, err = await cli(target, "keys", "create", "--name", "acme", "--email", "ops@acme.io", "--tier", "pro")
        assert code == 0, err
        created = json.loads(out)
        assert created["key"].startswith("tg_") and created["tier"] == "pro"

        code, out, _ = await cli(target, "chat", "hello cli", "--model", "demo", api_key=created["key"])
        assert code == 0 and "You said: hello cli" in out
        code, out, _ = await cli(target, "chat", "streamed", "--stream", api_key=created["key"])
        assert code == 0 and "You said: streamed" in out

        code, out, _ = await cli(target, "keys", "list")
        assert code == 0 and created["id"] in out and "active" in out
        code, out, _ = await cli(target, "usage", "--key-id", created["id"])
        assert code == 0 and out.count("demo") >= 2 and "ok" in out

        code, out, _ = await cli(target, "keys", "revoke", created["id"])
        assert code == 0
        await asyncio.sleep(1.1)  # revocations reach every cache within a second
        code, _, err = await cli(target, "chat", "again", api_key=created["key"])
        assert code == 1 and "UNAUTHENTICATED" in err
        assert created["key"] not in err


async def test_wrong_admin_key_is_refused(tmp_path):
    async with run_gateway(config(tmp_path, demo="on")) as gw:
        argv = [sys.executable, "-m", "services.cli", "--addr", gw.rt.grpc_target, "--admin-key", "nope", "keys", "list"]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 1 and b"UNAUTHENTICATED" in err


async def test_users_plans_and_statements(tmp_path):
    import csv
    import io

    async with run_gateway(config(tmp_path, demo="on")) as gw:
        target = gw.rt.grpc_target
        code, out, err = await cli(target, "users", "create", "--email", "ann@example.com", "--plan", "startup")
        assert code == 0, err
        made = json.loads(out)
        assert made["invite_token"].startswith("tgi_") and made["plan"] == "startup"
        code, out, _ = await cli(target, "users", "list", "--plan", "startup")
        assert code == 0 and "ann@example.com" in out and "active" in out
        code, out, _ = await cli(target, "users", "set", made["id"], "--plan", "growth", "--budget-month", "50")
        assert code == 0 and "plan growth" in out
        code, out, _ = await cli(target, "users", "suspend", made["id"])
        assert code == 0 and "suspended" in out
        code, _, err = await cli(target, "users", "set", made["id"], "--plan", "gold")
        assert code == 1 and "INVALID_ARGUMENT" in err
        code, out, _ = await cli(target, "plans")
        assert code == 0 and "growth" in out and "99.00" in out and "custom" in out
        code, out, _ = await cli(target, "statement", "--user", made["id"], "--csv")
        assert code == 0
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [r["line"] for r in rows] == ["plan_price", "total"] and rows[1]["cost_usd"] == "99.000000"
        code, out, _ = await cli(target, "users", "delete", made["id"])
        assert code == 0 and "deleted" in out


async def test_plans_create_update_delete(tmp_path):
    async with run_gateway(config(tmp_path)) as gw:
        target = gw.rt.grpc_target
        code, out, err = await cli(target, "plans", "create", "team", "--rpm", "30", "--price", "12.5",
                                   "--budget-month", "40", "--description", "the team plan")
        assert code == 0, err
        assert "plan team: rpm 30" in out and "price 12.50" in out and "budgets -/40" in out
        code, out, err = await cli(target, "plans", "update", "team", "--tpd", "5000", "--custom-price")
        assert code == 0, err
        assert "rpm 30" in out and "tpd 5000" in out and "price custom" in out  # unset flags kept
        assert gw.app.quotas.tiers["team"].tpd == 5000
        code, _, err = await cli(target, "plans", "create", "team")
        assert code == 1 and "ALREADY_EXISTS" in err
        code, _, err = await cli(target, "plans", "update", "team", "--rpm", "-1")
        assert code == 1 and "INVALID_ARGUMENT" in err and "rpm" in err
        code, _, err = await cli(target, "plans", "delete", "basic")
        assert code == 1 and "FAILED_PRECONDITION" in err
        code, out, _ = await cli(target, "plans", "list")
        assert code == 0 and "team" in out
        code, out, err = await cli(target, "plans", "delete", "team")
        assert code == 0 and "deleted plan team" in out, err
        assert "team" not in gw.app.quotas.tiers


async def test_aliases_set_list_delete(tmp_path):
    async with run_gateway(config(tmp_path)) as gw:
        target = gw.rt.grpc_target
        code, out, err = await cli(target, "aliases", "set", "fast", "demo")
        assert code == 0 and "alias fast → demo" in out, err
        code, out, err = await cli(target, "aliases", "set", "bad", "demo", "no-such-model-q")
        assert code == 1 and "INVALID_ARGUMENT" in err and "no-such-model-q" in err
        code, out, err = await cli(target, "aliases")
        assert code == 0 and "fast" in out and "runtime" in out and "bad" not in out
        code, out, err = await cli(target, "aliases", "delete", "fast")
        assert code == 0 and "deleted alias fast" in out
        code, out, err = await cli(target, "aliases", "delete", "fast")
        assert code == 1 and "NOT_FOUND" in err
