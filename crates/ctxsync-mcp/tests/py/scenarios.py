"""MCP client scenarios against a real ctxsync, with the official Python SDK (mcp==2.3.0).

Run by crates/ctxsync/tests/mcp.rs: `python3 scenarios.py SCENARIO`, with the JSON
configuration in the environment variable CTXSYNC_MCP_TEST:

  {"bin": ".../ctxsync", "cwd": "project dir", "transport": "stdio" | "http",
   "mode": "legacy" (2025-11-25, initialize) | "2026-07-28" (no initialize),
   "url": "http://127.0.0.1:PORT/mcp", "env": {agent: {VAR: value}}, "tokens": {agent: secret}}

Exit 0 when the scenario holds; an AssertionError (exit 1) says what did not.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import time

from mcp import Client, StdioServerParameters
import mcp_types as types

CFG = json.loads(os.environ["CTXSYNC_MCP_TEST"])


def client(agent, message_handler=None):
    """A client acting as `agent` (None: no agent named, stdio only)."""
    mode = CFG["mode"]
    if CFG["transport"] == "stdio":
        env = dict(os.environ)
        for var in ("CTXSYNC_AGENT", "CTXSYNC_SERVER", "CTXSYNC_TOKEN", "CTXSYNC_CONTEXT"):
            env.pop(var, None)
        env.update(CFG["env"].get(agent or "", {}))
        # Remote mode names no agent: the server's token does (GET /v1/whoami).
        remote = "CTXSYNC_SERVER" in CFG["env"].get(agent or "", {})
        args = ["mcp"] + (["--agent", agent] if agent and not remote else [])
        params = StdioServerParameters(command=CFG["bin"], args=args, cwd=CFG["cwd"], env=env)
        return Client(params, mode=mode, message_handler=message_handler)
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {CFG['tokens'][agent]}"}, timeout=60)
    return Client(streamable_http_client(CFG["url"], http_client=http), mode=mode, message_handler=message_handler)


def other_process_set(agent, path, value):
    """`ctxsync set` by another process (the CLI), as `agent`."""
    env = dict(os.environ)
    for var in ("CTXSYNC_AGENT", "CTXSYNC_SERVER", "CTXSYNC_TOKEN"):
        env.pop(var, None)
    env.update(CFG["env"].get(agent, {}))
    return subprocess.Popen(
        [CFG["bin"], "set", path, value, "--agent", agent, "--level", "checkpoint"],
        cwd=CFG["cwd"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


async def call(c, name, args, expect_error=False):
    """Calls a tool; checks the text copy matches the structured content and the error flag."""
    r = await c.call_tool(name, args)
    assert r.structured_content is not None, f"{name}: no structuredContent"
    assert r.content and r.content[0].type == "text", f"{name}: no text content"
    text = r.content[0].text
    if not r.is_error:
        assert json.loads(text) == r.structured_content, f"{name}: the text copy differs"
    else:
        assert r.structured_content["error"]["message"] in text, f"{name}: the text copy lacks the message"
    assert bool(r.is_error) == expect_error, f"{name} {args}: isError={r.is_error}: {text[:600]}"
    if not r.is_error:
        for key in ("revision", "behind", "changed_sections", "context"):
            assert key in r.structured_content, f"{name}: no {key} in {r.structured_content}"
    return r.structured_content, text


def walk(value, at, problems):
    if isinstance(value, dict):
        if "$ref" in value:
            problems.append(f"$ref at {at}")
        if isinstance(value.get("enum"), list) and None in value["enum"]:
            problems.append(f"null in enum at {at}")
        if isinstance(value.get("type"), list) and "null" in value["type"]:
            problems.append(f"null type at {at}")
        for k, v in value.items():
            walk(v, f"{at}/{k}", problems)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            walk(v, f"{at}/{i}", problems)


async def schemas():
    async with client("alice") as c:
        listed = await c.list_tools()
        names = [t.name for t in listed.tools]
        assert 1 <= len(names) <= 12, names
        expected = {"pull", "get", "set", "push", "conflicts", "resolve", "history", "claim",
                    "release", "wait", "handover", "who"}
        assert set(names) == expected, names
        problems = []
        for t in listed.tools:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", t.name), t.name
            s = t.input_schema
            assert s.get("type") == "object", (t.name, s)
            for bad in ("oneOf", "anyOf", "allOf", "not"):
                assert bad not in s, (t.name, bad)
            walk(s, t.name, problems)
            assert t.output_schema and t.output_schema.get("type") == "object", t.name
            for key in ("behind", "changed_sections", "revision"):
                assert key in t.output_schema["properties"], (t.name, key)
        assert not problems, problems
        # Every read tool answers with structured content valid against its output
        # schema (the client checks that on every successful call).
        await call(c, "pull", {})
        await call(c, "pull", {"sections": ["project_state"], "budget_tokens": 50})
        await call(c, "get", {"path": "project_state.current_phase"})
        await call(c, "conflicts", {})
        await call(c, "history", {"last": 3})
        await call(c, "who", {})
        await call(c, "wait", {"timeout_seconds": 0})
    print(f"ok: {len(names)} tools, flat schemas, protocol {CFG['mode']}")


async def conflict():
    async with client("alice") as a, client("bob") as b:
        base = (await call(a, "pull", {}))[0]["revision"]
        await call(b, "pull", {})
        mine, _ = await call(a, "push", {"base_revision": base, "changes": [
            {"path": "project_state.current_phase", "to": "alice-phase"}]})
        assert mine["revision"] == base + 1, mine
        theirs, text = await call(b, "push", {"base_revision": base, "strategy": "merge", "changes": [
            {"path": "project_state.current_phase", "to": "bob-phase"},
            {"op": "add", "path": "/technical_context/bob_note", "value": "kept"}]}, expect_error=True)
        assert len(theirs["conflicts"]) == 1, theirs
        c = theirs["conflicts"][0]
        assert c["path"] == "project_state.current_phase", c
        assert c["reason"] == "concurrent_write", c
        assert c["yours"] == "bob-phase" and c["current"] == "alice-phase", c
        assert c["modified_by"] == "alice" and c["modified_at_revision"] == base + 1, c
        assert [x["path"] for x in theirs["applied"]] == ["technical_context.bob_note"], theirs
        assert "alice-phase" in text and "bob-phase" in text, text
        # A field-level test that fails: both values again.
        failed, _ = await call(b, "set", {"path": "project_state.current_phase", "value": "x",
                                          "from": "bob-phase"}, expect_error=True)
        assert failed["conflicts"][0]["reason"] == "test_failed", failed
        assert failed["conflicts"][0]["current"] == "alice-phase", failed
        # Disjoint pushes from the same base both apply.
        base = (await call(a, "pull", {}))[0]["revision"]
        await call(b, "pull", {})
        one, _ = await call(a, "push", {"base_revision": base, "changes": [
            {"path": "technical_context.alice_only", "to": 1}]})
        two, _ = await call(b, "push", {"base_revision": base, "changes": [
            {"path": "technical_context.bob_only", "to": 2}]})
        assert two["revision"] == one["revision"] + 1, (one, two)
        doc = (await call(a, "get", {"path": "technical_context"}))[0]["value"]
        assert doc["alice_only"] == 1 and doc["bob_only"] == 2 and doc["bob_note"] == "kept", doc
        # The stale view: alice writes 3 revisions, bob's next answer says so.
        for i in range(3):
            await call(a, "set", {"path": f"decisions_log.stale_{i}", "value": i})
        seen, _ = await call(b, "get", {"path": "project_state"})
        assert seen["behind"] == 3, seen
        assert seen["changed_sections"] == ["decisions_log.stale_0", "decisions_log.stale_1",
                                            "decisions_log.stale_2"], seen
        again, _ = await call(b, "pull", {"sections": ["decisions_log"]})
        assert again["behind"] == 0, again
    print("ok: conflicts with both values, disjoint pushes, stale view")


async def wait():
    async with client("alice") as a:
        head = (await call(a, "pull", {}))[0]["revision"]
        started = time.monotonic()
        task = asyncio.create_task(call(a, "wait", {"since": head, "timeout_seconds": 25}))
        await asyncio.sleep(0.3)
        setter = other_process_set("carol", "project_state.waited", "yes")
        got, _ = await task
        elapsed = time.monotonic() - started
        assert setter.wait(timeout=30) == 0, setter.stderr.read()
        assert got["changed"] is True, got
        assert got["entries"][0]["revision"] == head + 1, got
        assert got["entries"][0]["agent"] == "carol", got
        # Generous bound only (the push came at 0.3 s; the wait's own limit is 25 s).
        assert elapsed < 20, elapsed
        # Nothing comes: the timeout ends it with nothing.
        quiet, _ = await call(a, "wait", {"timeout_seconds": 1})
        assert quiet["changed"] is False and quiet["entries"] == [], quiet
        # A checkpoint push does not end a wait for critical revisions.
        head = quiet["revision"]
        task = asyncio.create_task(call(a, "wait", {"since": head, "levels": ["critical"], "timeout_seconds": 2}))
        await asyncio.sleep(0.2)
        assert other_process_set("carol", "project_state.not_critical", "1").wait(timeout=30) == 0
        filtered, _ = await task
        assert filtered["changed"] is False, filtered
        # A section filter: a write elsewhere is skipped, one inside is returned.
        head = filtered["revision"]
        task = asyncio.create_task(call(a, "wait", {"since": head, "sections": ["decisions_log"], "timeout_seconds": 25}))
        await asyncio.sleep(0.2)
        assert other_process_set("carol", "project_state.elsewhere", "1").wait(timeout=30) == 0
        assert other_process_set("carol", "decisions_log.inside", "1").wait(timeout=30) == 0
        sect, _ = await task
        assert sect["changed"] is True and [e["revision"] for e in sect["entries"]] == [head + 2], sect
    print(f"ok: wait returned {elapsed:.2f}s after start (push at 0.3s), timeout and filters")


async def bad_input():
    async with client("alice") as a:
        before = (await call(a, "pull", {}))[0]["revision"]
        r = await a.call_tool("no_such_tool", {"x": 1})
        assert r.is_error and "unknown tool" in r.content[0].text, r
        cases = [
            ("set", {"path": "project_state.x"}),                       # no value
            ("set", {"path": 42, "value": 1}),                           # wrong type
            ("set", {"path": "a[", "value": 1}),                         # bad path
            ("set", {"path": "a", "value": 1, "level": "urgent"}),       # not a level
            ("set", {"path": "a", "value": 1, "surprise": True}),        # unknown field
            ("push", {"changes": "not a list"}),
            ("push", {"changes": []}),
            ("push", {"changes": [{"op": "frobnicate", "path": "/a"}]}),
            ("push", {"changes": [{"path": "a", "to": 1, "value": 2, "op": "add"}]}),
            ("push", {"changes": [{"to": 1}]}),
            ("push", {"changes": [{"path": "x", "to": 1}], "base_revision": "yesterday"}),
            ("push", {"changes": [{"path": "x", "to": 1}], "strategy": "hope"}),
            ("get", {"path": "x", "revision": -1}),
            ("pull", {"since": 0, "budget_tokens": 10}),
            ("wait", {"timeout_seconds": 99999}),
            ("claim", {"path": "project_state.active_tasks", "ttl_seconds": 0}),
            ("resolve", {"id": 1, "prefer": "both"}),
            ("history", {"last": "many"}),
            ("pull", {"context": "Not A Name!"}),
            ("set", {"path": "project_state.big", "value": "x" * (2 * 1024 * 1024)}),  # huge
        ]
        for name, args in cases:
            r = await a.call_tool(name, args)
            shown = {k: (v if len(str(v)) < 80 else "...") for k, v in args.items()}
            assert r.is_error, f"{name} {shown}: not an error: {r.content[0].text[:300]}"
            assert r.structured_content["error"]["message"], (name, shown)
        after = (await call(a, "pull", {}))[0]["revision"]
        assert after == before, f"bad input changed the context: {before} -> {after}"
        # Still serving.
        assert len((await a.list_tools()).tools) == 12
        await call(a, "set", {"path": "project_state.after_bad_input", "value": True})
    print(f"ok: {len(cases) + 1} bad inputs were error results, nothing changed, still serving")


async def no_agent():
    async with client(None) as c:
        before = (await call(c, "pull", {}))[0]["revision"]
        r, text = await call(c, "set", {"path": "project_state.x", "value": 1}, expect_error=True)
        assert "CTXSYNC_AGENT" in text and "--agent" in text, text
        assert r["error"]["code"] == "no_agent", r
        assert (await call(c, "pull", {}))[0]["revision"] == before
    print("ok: a write without an agent says how to name one")


async def subscribe():
    updated = asyncio.Event()
    seen = []

    async def on_message(message):
        inner = getattr(message, "root", message)
        if getattr(inner, "method", None) == "notifications/resources/updated":
            seen.append(inner.params.uri)
            updated.set()

    async with client("alice", message_handler=on_message) as c:
        listed = await c.list_resources()
        assert any(r.uri == "ctxsync://default" for r in listed.resources), listed
        read = await c.read_resource("ctxsync://default/project_state")
        assert "current_phase" in json.loads(read.contents[0].text), read
        await c.subscribe_resource("ctxsync://default/project_state")
        assert other_process_set("carol", "project_state.subscribed", "1").wait(timeout=30) == 0
        await asyncio.wait_for(updated.wait(), timeout=20)
        assert "ctxsync://default/project_state" in seen, seen
    print("ok: resources listed, read, and a subscription notified")


async def listen():
    """2026-07-28: subscriptions/listen instead of resources/subscribe."""
    uri = "ctxsync://default/project_state"
    async with client("alice") as c:
        async with c.listen(resource_subscriptions=[uri, "https://not.ours/x"]) as sub:
            assert sub.honored.resource_subscriptions == [uri], sub.honored
            # A write elsewhere is not news for this section; one inside is.
            assert other_process_set("carol", "decisions_log.elsewhere", "1").wait(timeout=30) == 0
            assert other_process_set("carol", "project_state.listened", "1").wait(timeout=30) == 0
            event = await asyncio.wait_for(sub.__anext__(), timeout=20)
            assert getattr(event, "uri", None) == uri, event
    print("ok: subscriptions/listen notified a write to the section")


async def claims_handover():
    async with client("alice") as a, client("bob") as b:
        await call(a, "set", {"path": "project_state.active_tasks", "value": [{"id": "task-7", "status": "todo"}]})
        got, _ = await call(a, "claim", {"path": "project_state.active_tasks[id=task-7]", "ttl_seconds": 60})
        assert got["granted"] is True and got["claim"]["holder"] == "alice", got
        held, text = await call(b, "claim", {"path": "project_state.active_tasks[id=task-7]"}, expect_error=True)
        assert held["claim"]["holder"] == "alice" and "alice" in text, held
        refused, _ = await call(b, "set", {"path": "project_state.active_tasks[id=task-7].status", "value": "mine"},
                                expect_error=True)
        assert refused["rejected"][0]["reason"] == "claimed", refused
        who, _ = await call(b, "who", {})
        assert any(x["agent"] == "alice" and x["claims"] for x in who["agents"]), who
        rel, _ = await call(a, "release", {"path": "project_state.active_tasks[id=task-7]"})
        assert rel["released"] is True, rel
        h, _ = await call(a, "handover", {"summary": "task-7 half done", "to": "bob", "next_steps": ["tests"],
                                          "tasks": ["task-7"]})
        record = h["handover"]
        listed = (await call(b, "get", {"path": "communication.handovers"}))[0]["value"]
        assert any(x.get("id") == record["id"] and x["from"] == "alice" and x["to"] == "bob" for x in listed), listed
    print("ok: claim, held claim as error, claimed write refused, who, release, handover")


if __name__ == "__main__":
    scenario = sys.argv[1]
    asyncio.run(globals()[scenario]())
