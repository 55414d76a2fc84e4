"""Registry: handler kinds and call shapes are decided once, at registration."""
from __future__ import annotations

import asyncio

import pytest

from snakepit_bridge import Kind, Registry, UnknownCommand
from snakepit_bridge.dispatch import Dispatcher, Request


def make_registry() -> Registry:
    r = Registry()

    @r.command("plain")
    def plain(args):
        return {"x": args["x"] * 2}

    @r.command("coro")
    async def coro(args, ctx):
        return {"rid": ctx.request_id}

    @r.command("gen")
    def gen(args):
        yield from ({"i": i} for i in range(2))

    @r.command("agen")
    async def agen():
        yield {"i": 0}

    return r


def test_kinds_are_classified_at_registration():
    r = make_registry()
    assert {h.name: h.kind for h in r} == {
        "plain": Kind.FUNCTION, "coro": Kind.COROUTINE, "gen": Kind.GENERATOR, "agen": Kind.ASYNC_GENERATOR}
    assert {h.name: h.arity for h in r} == {"plain": 1, "coro": 2, "gen": 1, "agen": 0}
    assert r.get("gen").streaming and not r.get("plain").streaming


def test_unknown_command_raises():
    with pytest.raises(UnknownCommand, match="unknown command 'missing'"):
        make_registry().get("missing")


def test_handlers_with_too_many_parameters_are_rejected():
    with pytest.raises(TypeError, match=r"\(\), \(args\) or \(args, ctx\)"):
        Registry().add("bad", lambda a, b, c: None)


def test_register_twice_without_replace_fails():
    r = make_registry()
    with pytest.raises(ValueError, match="already registered"):
        r.add("plain", lambda: None, replace=False)


def test_every_kind_runs_through_dispatch():
    d = Dispatcher(make_registry())

    async def run():
        plain = await d.call(Request("plain", {"x": 2}))
        coro = await d.call(Request("coro", {}, request_id="q"))
        gen = [c.data async for c in d.stream(Request("gen", {}))]
        agen = [c.data async for c in d.stream(Request("agen", {}))]
        return plain, coro, gen, agen

    plain, coro, gen, agen = asyncio.run(run())
    assert plain.result == {"x": 4} and coro.result == {"rid": "q"}
    assert gen == [{"i": 0}, {"i": 1}, {}] and agen == [{"i": 0}, {}]


def test_inline_is_for_plain_functions_only():
    r = Registry()
    assert r.add("quick", lambda args: args, inline=True).kind is Kind.INLINE
    assert not r.get("quick").streaming

    async def coro(args):
        return args

    def gen(args):
        yield args

    for func in (coro, gen):
        with pytest.raises(TypeError, match="only a plain function can be inline"):
            r.add("bad", func, inline=True)
    assert "bad" not in r


def test_inline_handlers_run_on_the_loop_thread():
    import threading

    r = Registry()
    r.add("where", lambda: {"thread": threading.current_thread().name}, inline=True)
    r.add("thread", lambda: {"thread": threading.current_thread().name})
    d = Dispatcher(r)

    async def run():
        return [(await d.call(Request(name, {}))).result["thread"] for name in ("where", "thread")]

    inline, threaded = asyncio.run(run())
    assert inline == threading.main_thread().name and threaded != inline
