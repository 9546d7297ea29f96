"""`tollgate`: the operator's command line over the typed gRPC client (no curl needed).

    tollgate keys create --name acme --email ops@acme.io --tier pro
    tollgate keys list [--all]
    tollgate keys revoke ak_…
    tollgate usage [--key-id ak_…] [--model m] [--limit 20]
    tollgate models
    tollgate chat "Hello" [--model demo] [--stream]
    tollgate users list [--q ann] [--plan startup] [--role user] [--state suspended] [--limit 50] [--offset 0]
    tollgate users create --email a@b.io --plan startup [--role admin] [--password …]   (no password: an invite)
    tollgate users set usr_… [--plan growth] [--role admin] [--budget-day 5] [--budget-month 100]
    tollgate users suspend|reactivate|delete usr_…
    tollgate plans [list]
    tollgate plans create team [--rpm 60] [--rpd 0] [--tpd 0] [--tpm-month 0] [--price 29 | --custom-price]
                               [--budget-day 5] [--budget-month 100] [--description "…"]
    tollgate plans update team [same flags; unset ones keep their current values]
    tollgate plans delete team   (refused while a user or key is on it, or when the config declares it)
    tollgate statement [--month 2026-11] [--user usr_…] [--csv]
    tollgate aliases [list]
    tollgate aliases set smart anthropic/claude-sonnet-4-6 openai/gpt-4.1   (in the order tried)
    tollgate aliases delete smart   (a run-time alias; every replica drops it within about a second)

Address from --addr or TOLLGATE_GRPC_ADDR (default 127.0.0.1:50051); the admin key from
--admin-key or TOLLGATE_ADMIN_KEY; an API key (for chat and models) from --api-key or
TOLLGATE_API_KEY. Errors print the server's message and reason, and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys

import grpc

from tollgate.client import TollgateClient, error_info
from tollgate.statements import statements_csv
from tollgate.v1 import admin_service_pb2 as apb
from tollgate.v1 import chat_pb2
from tollgate.v1 import user_service_pb2 as upb


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header)] + [fmt.format(*map(str, r)) for r in rows])


async def run(args: argparse.Namespace) -> int:
    client = TollgateClient.connect(args.addr, api_key=args.api_key or "", admin_key=args.admin_key or "")
    try:
        if args.cmd == "keys" and args.keys_cmd == "create":
            r = await client.create_api_key(args.name, args.email or "", args.tier or "")
            print(json.dumps({"id": r.api_key.id, "key": r.key, "prefix": r.api_key.prefix, "tier": r.api_key.tier}, indent=2))
            print("The key is shown only now; store it safely.", file=sys.stderr)
        elif args.cmd == "keys" and args.keys_cmd == "list":
            r = await client.list_api_keys(include_revoked=args.all)
            print(_table([[k.id, k.prefix + "…", k.name, k.email, k.tier, _when(k.created), "revoked" if k.revoked_at else "active"]
                          for k in r.api_keys], ["ID", "PREFIX", "NAME", "EMAIL", "TIER", "CREATED", "STATE"]))
        elif args.cmd == "keys" and args.keys_cmd == "revoke":
            await client.revoke_api_key(args.id)
            print(f"revoked {args.id}")
        elif args.cmd == "usage":
            r = await client.list_usage(key_id=args.key_id or "", model=args.model or "", page_size=args.limit)
            print(_table([[u.request_id, _when(u.created_at), u.key_id, u.provider, u.model, u.status,
                           u.prompt_tokens, u.completion_tokens, "~" if u.estimated else "", f"{u.cost_usd:.6f}",
                           f"{u.latency_ms:.0f}", u.attempts] for u in r.rows],
                         ["REQUEST", "TIME", "KEY", "PROVIDER", "MODEL", "STATUS", "IN", "OUT", "EST", "USD", "MS", "TRIES"]))
            print(f"{len(r.rows)} of {r.total_size} rows", file=sys.stderr)
        elif args.cmd == "models":
            r = await client.list_models(page_size=100)
            print(_table([[m.id, ",".join(m.providers), m.context_length or "-",
                           f"{m.pricing.prompt_per_mtok:g}/{m.pricing.completion_per_mtok:g}"] for m in r.models],
                         ["MODEL", "PROVIDERS", "CONTEXT", "USD/MTOK IN/OUT"]))
        elif args.cmd == "users":
            await _users(client, args)
        elif args.cmd == "aliases":
            await _aliases(client, args)
        elif args.cmd == "plans" and getattr(args, "plans_cmd", None) in ("create", "update", "delete"):
            await _plans(client, args)
        elif args.cmd == "plans":
            r = await client.users.ListPlans(upb.ListPlansRequest(), metadata=client._admin_md)
            print(_table([[p.name, p.rpm or "-", p.rpd or "-", p.tpd or "-", p.tpm_month or "-",
                           f"{p.price_usd_month:.2f}" if p.HasField("price_usd_month") else "custom",
                           p.budget_usd_day or "-", p.budget_usd_month or "-", p.users] for p in r.plans],
                         ["PLAN", "RPM", "RPD", "TPD", "TOKENS/MONTH", "USD/MONTH", "BUDGET/DAY", "BUDGET/MONTH", "USERS"]))
        elif args.cmd == "statement":
            r = await client.users.ListStatements(upb.ListStatementsRequest(month=args.month or "", user=args.user or ""),
                                                  metadata=client._admin_md)
            if args.csv:
                print(statements_csv(r.statements), end="")
            else:
                for st in r.statements:
                    print(f"{st.email} ({st.user_id}) {st.month}, plan {st.plan}: "
                          f"{'custom' if st.custom_price else f'${st.plan_price_usd:.2f}'}")
                    print(_table([[x.name, x.requests, x.prompt_tokens, x.completion_tokens, f"{x.cost_usd:.6f}"]
                                  for x in st.lines], ["MODEL", "REQUESTS", "IN", "OUT", "USD"]))
                    print(f"usage ${st.usage_cost_usd:.6f}  total ${st.total_usd:.2f}\n")
        elif args.cmd == "chat":
            inp = chat_pb2.ChatInput(model=args.model, surface="cli",
                                     messages=[chat_pb2.Message(role=chat_pb2.ROLE_USER, text=args.prompt)])
            if args.stream:
                async for msg in client.stream_chat(inp):
                    if msg.WhichOneof("event") == "delta":
                        for d in msg.delta.deltas:
                            print(d.text, end="", flush=True)
                print()
            else:
                r = await client.chat(inp)
                print(r.text)
        return 0
    except grpc.aio.AioRpcError as e:
        info = error_info(e)
        print(f"tollgate: {info.code.name}: {info.message}" + (f" ({info.reason})" if info.reason else ""), file=sys.stderr)
        return 1
    finally:
        await client.close()


_PLAN_FLAGS = (("rpm", "rpm"), ("rpd", "rpd"), ("tpd", "tpd"), ("tpm_month", "tpm_month"),
               ("budget_day", "budget_usd_day"), ("budget_month", "budget_usd_month"), ("description", "description"))


async def _plans(client: TollgateClient, args: argparse.Namespace) -> None:
    md, u = client._admin_md, client.users
    if args.plans_cmd == "delete":
        await u.DeletePlan(upb.DeletePlanRequest(name=args.name), metadata=md)
        print(f"deleted plan {args.name}")
        return
    plan = upb.Plan(name=args.name)
    if args.plans_cmd == "update":  # UpdatePlan replaces every field: start from the current values
        current = {p.name: p for p in (await u.ListPlans(upb.ListPlansRequest(), metadata=md)).plans}
        if args.name in current:
            plan.CopyFrom(current[args.name])
            plan.users = 0
    for flag, field in _PLAN_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            setattr(plan, field, value)
    if args.custom_price:
        plan.ClearField("price_usd_month")
    elif args.price is not None:
        plan.price_usd_month = args.price
    if args.plans_cmd == "create":
        r = await u.CreatePlan(upb.CreatePlanRequest(plan=plan), metadata=md)
    else:
        r = await u.UpdatePlan(upb.UpdatePlanRequest(plan=plan), metadata=md)
    p = r.plan
    print(f"plan {p.name}: rpm {p.rpm or '-'}, rpd {p.rpd or '-'}, tpd {p.tpd or '-'}, tokens/month {p.tpm_month or '-'}, "
          f"price {f'{p.price_usd_month:.2f}' if p.HasField('price_usd_month') else 'custom'}, "
          f"budgets {p.budget_usd_day or '-'}/{p.budget_usd_month or '-'}, users {p.users}")


async def _aliases(client: TollgateClient, args: argparse.Namespace) -> None:
    md, a = client._admin_md, client.admin
    cmd = getattr(args, "aliases_cmd", None) or "list"
    if cmd == "set":
        r = await a.SetModelAlias(apb.SetModelAliasRequest(name=args.name, models=args.models), metadata=md)
        print(f"alias {r.alias.name} → {' → '.join(r.alias.models)}")
    elif cmd == "delete":
        r = await a.DeleteModelAlias(apb.DeleteModelAliasRequest(name=args.name), metadata=md)
        print(f"deleted alias {r.alias.name}")
    else:
        r = await a.ListModelAliases(apb.ListModelAliasesRequest(), metadata=md)
        print(_table([[x.name, x.source, " → ".join(x.models)] for x in r.aliases], ["ALIAS", "SOURCE", "MODELS"]))


async def _users(client: TollgateClient, args: argparse.Namespace) -> None:
    md, u = client._admin_md, client.users
    if args.users_cmd == "list":
        r = await u.ListUsers(upb.ListUsersRequest(query=args.q or "", plan=args.plan or "", role=args.role or "",
                                                   state=args.state or "", page_size=args.limit, skip=args.offset),
                              metadata=md)
        print(_table([[x.user.id, x.user.email, x.user.role, x.user.tier, x.user.state, x.tokens,
                       f"{x.spend_month_usd:.4f}"] for x in r.users],
                     ["ID", "EMAIL", "ROLE", "PLAN", "STATE", "TOKENS", "USD THIS MONTH"]))
        print(f"{len(r.users)} of {r.total_size} users", file=sys.stderr)
    elif args.users_cmd == "create":
        r = await u.CreateUser(upb.CreateUserRequest(email=args.email, plan=args.plan, role=args.role or "",
                                                     password=args.password or ""), metadata=md)
        print(json.dumps({"id": r.user.id, "email": r.user.email, "plan": r.user.tier, "role": r.user.role,
                          **({"invite_token": r.invite_token} if r.invite_token else {})}, indent=2))
    elif args.users_cmd == "set":
        kw = {}
        if args.budget_day is not None:
            kw["budget_usd_day"] = args.budget_day
        if args.budget_month is not None:
            kw["budget_usd_month"] = args.budget_month
        r = await u.UpdateUser(upb.UpdateUserRequest(id=args.id, plan=args.plan or "", role=args.role or "", **kw),
                               metadata=md)
        print(f"{r.user.id} {r.user.email}: plan {r.user.tier}, role {r.user.role}, state {r.user.state}")
    elif args.users_cmd in ("suspend", "reactivate"):
        state = "suspended" if args.users_cmd == "suspend" else "active"
        r = await u.UpdateUser(upb.UpdateUserRequest(id=args.id, state=state), metadata=md)
        print(f"{r.user.id} {r.user.email}: {r.user.state}")
    elif args.users_cmd == "delete":
        await u.DeleteUser(upb.DeleteUserRequest(id=args.id), metadata=md)
        print(f"deleted {args.id} (tokens and sessions revoked; ledger rows kept)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tollgate", description="Operate a Tollgate gateway over gRPC.")
    ap.add_argument("--addr", default=os.environ.get("TOLLGATE_GRPC_ADDR", "127.0.0.1:50051"))
    ap.add_argument("--admin-key", default=os.environ.get("TOLLGATE_ADMIN_KEY") or os.environ.get("ADMIN_API_KEY"))
    ap.add_argument("--api-key", default=os.environ.get("TOLLGATE_API_KEY"))
    sub = ap.add_subparsers(dest="cmd", required=True)
    keys = sub.add_parser("keys", help="create, list and revoke API keys").add_subparsers(dest="keys_cmd", required=True)
    c = keys.add_parser("create")
    c.add_argument("--name", required=True)
    c.add_argument("--email")
    c.add_argument("--tier")
    ls = keys.add_parser("list")
    ls.add_argument("--all", action="store_true", help="include revoked keys")
    rv = keys.add_parser("revoke")
    rv.add_argument("id")
    u = sub.add_parser("usage", help="the usage ledger, newest first")
    u.add_argument("--key-id")
    u.add_argument("--model")
    u.add_argument("--limit", type=int, default=20)
    sub.add_parser("models", help="routable models")
    us = sub.add_parser("users", help="users: list, create, set, suspend, reactivate, delete").add_subparsers(
        dest="users_cmd", required=True)
    ul = us.add_parser("list")
    for flag in ("--q", "--plan", "--role", "--state"):
        ul.add_argument(flag)
    ul.add_argument("--limit", type=int, default=50)
    ul.add_argument("--offset", type=int, default=0)
    uc = us.add_parser("create")
    uc.add_argument("--email", required=True)
    uc.add_argument("--plan", required=True)
    uc.add_argument("--role")
    uc.add_argument("--password")
    uset = us.add_parser("set")
    uset.add_argument("id")
    uset.add_argument("--plan")
    uset.add_argument("--role")
    uset.add_argument("--budget-day", type=float)
    uset.add_argument("--budget-month", type=float)
    for name in ("suspend", "reactivate", "delete"):
        us.add_parser(name).add_argument("id")
    pl = sub.add_parser("plans", help="plans with prices, limits and budgets; create, update, delete")
    ps = pl.add_subparsers(dest="plans_cmd")
    ps.add_parser("list")
    for name in ("create", "update"):
        pc = ps.add_parser(name)
        pc.add_argument("name")
        for flag in ("rpm", "rpd", "tpd", "tpm-month"):
            pc.add_argument(f"--{flag}", type=int)
        pc.add_argument("--price", type=float, help="USD per month")
        pc.add_argument("--custom-price", action="store_true", help="no list price (shown as custom)")
        pc.add_argument("--budget-day", type=float)
        pc.add_argument("--budget-month", type=float)
        pc.add_argument("--description")
    ps.add_parser("delete").add_argument("name")
    al = sub.add_parser("aliases", help="model aliases (fallback groups): list, set, delete at run time")
    als = al.add_subparsers(dest="aliases_cmd")
    als.add_parser("list")
    aset = als.add_parser("set")
    aset.add_argument("name")
    aset.add_argument("models", nargs="+")
    als.add_parser("delete").add_argument("name")
    st = sub.add_parser("statement", help="monthly statements (every user, or --user)")
    st.add_argument("--month")
    st.add_argument("--user")
    st.add_argument("--csv", action="store_true")
    ch = sub.add_parser("chat", help="one chat request")
    ch.add_argument("prompt")
    ch.add_argument("--model", default="demo")
    ch.add_argument("--stream", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> None:
    sys.exit(asyncio.run(run(parser().parse_args(argv))))


if __name__ == "__main__":
    main()
