"""Benchmark of the pattern matcher: events per second for a bus of mixed-operator rules.

Events: ~1 KB CloudEvents of 24 types from 12 sources, given as JSON bytes (decoding included),
with a payload of scalars, a nested customer object, an array of 1-4 item objects and an array of
tags.

Two rule mixes, each drawn rule by rule (rule n of a bus of 10, 300 or 1,000 is the same rule):
- *realistic* (the targets are judged on it), like EventBridge buses in practice: 50% of the rules
  are anchored on an exact ``type`` (a fifth of them on a list of two types), 20% on an exact
  ``source`` (half of these also on a ``type`` prefix), 15% on both ``source`` and ``type``; each
  anchored rule adds 1-2 conditions on the payload drawn from 14 kinds (numeric ranges, prefix,
  suffix, anything-but, exists, cidr, wildcard, equals-ignore-case, $or, value lists, fields of
  objects in an array). The other 15% are unanchored: 1-2 of the same payload conditions only.
- *broad*: the earlier mix, cycling through 12 rule shapes of which only a third is anchored on
  ``type``; rules are broad (about 30 of 300 match each event), a worst case for any matcher.

Prints, per mix: events/s against 300 rules (EventBridge's per-bus quota) on one core, bytes in
and dict in; rules matched per event; 10 and 1,000 rules and the cost ratio. Then a plain loop
that evaluates every rule's compiled pattern one by one beside the Matcher, and one rule alone
(in the Matcher and as a compiled pattern), measured in the same run.

Rates are the fastest of 18 whole passes over the distinct events, timed by this thread's CPU
time after a warm-up pass, all cases taking turns, so that other processes on a shared machine
count as little as possible; still, expect +-15% between runs there.

Run: ``.venv/bin/python bench/patterns.py [--events N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from stellwerk.patterns import CompiledPattern, Matcher, compile_pattern

TYPES = [
    f"com.example.{noun}.{verb}"
    for noun in ("order", "user", "invoice", "shipment", "payment", "cart")
    for verb in ("created", "updated", "deleted", "failed")
]
SOURCES = [
    f"/{team}/{svc}"
    for team in ("shop", "billing", "logistics", "identity")
    for svc in ("api", "worker", "cron")
]
COUNTRIES = ["DE", "FR", "US", "GB", "NL", "SE", "PL", "IT", "ES", "AT"]
STATES = ["new", "paid", "shipped", "cancelled", "refunded", "on-hold", "initializing"]
TIERS = ["free", "pro", "team", "enterprise"]


def make_event(rng: random.Random, number: int) -> dict[str, Any]:
    items = [
        {
            "sku": f"SKU-{rng.randint(1000, 9999)}",
            "quantity": rng.randint(1, 5),
            "price": round(rng.uniform(1, 300), 2),
        }
        for _ in range(rng.randint(1, 4))
    ]
    return {
        "specversion": "1.0",
        "id": f"evt-{number:012d}-{rng.getrandbits(32):08x}",
        "source": rng.choice(SOURCES),
        "type": rng.choice(TYPES),
        "subject": f"orders/{rng.randint(1, 10**6)}",
        "time": f"2025-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T12:{rng.randint(10, 59)}:00Z",
        "datacontenttype": "application/json",
        "tenant": "acme",
        "bus": "default",
        "data": {
            "orderId": f"ord-{rng.randint(1, 10**6)}",
            "state": rng.choice(STATES),
            "total": round(rng.uniform(0, 2000), 2),
            "currency": rng.choice(["EUR", "USD", "GBP"]),
            "customer": {
                "id": f"cus-{rng.randint(1, 10**5)}",
                "tier": rng.choice(TIERS),
                "email": f"user{rng.randint(1, 999)}@{rng.choice(['example.com', 'mail.test'])}",
                "country": rng.choice(COUNTRIES),
                "ip": f"10.{rng.randint(0, 3)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            },
            "items": items,
            "tags": rng.sample(["gift", "express", "b2b", "promo", "fragile", "bulk"], 2),
            "channel": rng.choice(["web", "app", "pos", "api"]),
            "retries": rng.randint(0, 6),
            "flags": {"test": rng.random() < 0.1, "priority": rng.random() < 0.3},
            "notes": "x" * rng.randint(150, 300),
        },
    }


def make_broad_rule(rng: random.Random, number: int) -> dict[str, Any]:
    """A rule of 2-3 fields, its operators cycling through the whole language, mostly unanchored."""
    kind = number % 12
    rule: dict[str, Any] = {"type": [rng.choice(TYPES)]} if kind % 3 else {}
    data: dict[str, Any] = {}
    if kind == 0:
        rule["source"] = [{"prefix": rng.choice(SOURCES)[:6]}]
        data["total"] = [{"numeric": [">", rng.randint(0, 1500)]}]
    elif kind == 1:
        data["state"] = [{"anything-but": rng.sample(STATES, 2)}]
    elif kind == 2:
        data["customer"] = {"country": rng.sample(COUNTRIES, 3)}
        data["channel"] = [{"equals-ignore-case": rng.choice(["WEB", "App"])}]
    elif kind == 3:
        data["customer"] = {"email": [{"suffix": rng.choice(["example.com", ".test"])}]}
    elif kind == 4:
        data["customer"] = {"ip": [{"cidr": f"10.{rng.randint(0, 3)}.0.0/16"}]}
        data["retries"] = [{"numeric": [">=", 1, "<", rng.randint(2, 6)]}]
    elif kind == 5:
        rule["subject"] = [{"wildcard": f"orders/{rng.randint(1, 9)}*"}]
    elif kind == 6:
        data["items"] = {
            "sku": [{"prefix": f"SKU-{rng.randint(1, 9)}"}],
            "quantity": [{"numeric": [">", 2]}],
        }
    elif kind == 7:
        data["flags"] = {"test": [False]}
        data["coupon"] = [{"exists": False}]
    elif kind == 8:
        data["$or"] = [{"currency": ["EUR"]}, {"total": [{"numeric": ["<", 50]}]}]
    elif kind == 9:
        data["tags"] = [rng.choice(["gift", "express", "b2b"])]
        data["customer"] = {"tier": [{"anything-but": {"prefix": "fr"}}]}
    elif kind == 10:
        rule["source"] = [rng.choice(SOURCES), rng.choice(SOURCES)]
        data["state"] = [{"prefix": {"equals-ignore-case": rng.choice(["PA", "SH", "Ne"])}}]
    else:
        data["customer"] = {"id": [{"exists": True}]}
        data["orderId"] = [{"anything-but": {"suffix": str(rng.randint(0, 9))}}]
    if data:
        rule["data"] = data
    return rule


def _payload_condition(rng: random.Random, kind: int) -> dict[str, Any]:
    """One condition on the payload (``data``), of one of 14 kinds."""
    if kind == 0:
        return {"total": [{"numeric": [">", rng.randint(0, 1800)]}]}
    if kind == 1:
        low = rng.randint(0, 1500)
        return {"total": [{"numeric": [">=", low, "<", low + rng.randint(50, 500)]}]}
    if kind == 2:
        return {"state": [{"anything-but": rng.sample(STATES, 2)}]}
    if kind == 3:
        return {"customer": {"email": [{"suffix": rng.choice(["example.com", ".test"])}]}}
    if kind == 4:
        return {"customer": {"ip": [{"cidr": f"10.{rng.randint(0, 3)}.0.0/16"}]}}
    if kind == 5:
        return {"customer": {"country": rng.sample(COUNTRIES, 3)}}
    if kind == 6:
        return {"channel": [{"equals-ignore-case": rng.choice(["WEB", "App", "POS"])}]}
    if kind == 7:
        return {
            "items": {
                "sku": [{"prefix": f"SKU-{rng.randint(1, 9)}"}],
                "quantity": [{"numeric": [">", 2]}],
            }
        }
    if kind == 8:
        return {"coupon": [{"exists": False}], "flags": {"test": [False]}}
    if kind == 9:
        return {"$or": [{"currency": ["EUR"]}, {"total": [{"numeric": ["<", 50]}]}]}
    if kind == 10:
        return {"tags": [rng.choice(["gift", "express", "b2b"])]}
    if kind == 11:
        return {"customer": {"tier": [{"anything-but": {"prefix": "fr"}}]}}
    if kind == 12:
        return {"state": [{"prefix": {"equals-ignore-case": rng.choice(["PA", "SH", "Ne"])}}]}
    return {"retries": [{"numeric": [">=", 1, "<", rng.randint(2, 6)]}]}


def make_realistic_rule(rng: random.Random, number: int) -> dict[str, Any]:
    """A rule as on a real bus: mostly anchored on an exact type and/or source (see the doc)."""
    del number
    roll = rng.random()
    rule: dict[str, Any] = {}
    if roll < 0.50:
        rule["type"] = rng.sample(TYPES, 2) if rng.random() < 0.2 else [rng.choice(TYPES)]
    elif roll < 0.70:
        rule["source"] = [rng.choice(SOURCES)]
        if rng.random() < 0.5:
            rule["type"] = [{"prefix": rng.choice(TYPES).rsplit(".", 1)[0] + "."}]
    elif roll < 0.85:
        rule["source"] = [rng.choice(SOURCES)]
        rule["type"] = [rng.choice(TYPES)]
    data: dict[str, Any] = {}
    for _ in range(rng.randint(1, 2)):
        condition = _payload_condition(rng, rng.randrange(14))
        for key, value in condition.items():
            data.setdefault(key, value)
    rule["data"] = data
    if roll >= 0.85 and rng.random() < 0.3:
        rule["subject"] = [{"wildcard": f"orders/{rng.randint(1, 9)}*"}]
    return rule


MIXES: dict[str, Callable[[random.Random, int], dict[str, Any]]] = {
    "realistic": make_realistic_rule,
    "broad": make_broad_rule,
}


Case = tuple[Callable[[Any], object], Sequence[Any]]


def _rates(cases: dict[str, Case], *, rounds: int = 6, passes: int = 3) -> dict[str, float]:
    """Events per second of each case (a function and the events it is given): the fastest of
    whole passes over the distinct events.

    Time is this thread's CPU time, so other processes on a shared machine count as little as
    possible, but everything this process does (decoding, allocation, garbage collection) does.
    The cases take turns, a few passes each per round, so that a noisy minute hurts all of them
    alike instead of one.
    """
    best = dict.fromkeys(cases, float("inf"))
    for process, batch in cases.values():  # warm-up: allocator arenas, caches, clock
        for item in batch:
            process(item)
    for _ in range(rounds):
        for name, (process, batch) in cases.items():
            for _ in range(passes):
                start = time.thread_time()
                for item in batch:
                    process(item)
                best[name] = min(best[name], time.thread_time() - start)
    return {name: len(cases[name][1]) / best[name] for name in cases}


def _matcher(rules: Sequence[dict[str, Any]]) -> Matcher:
    matcher = Matcher()
    for number, rule in enumerate(rules):
        matcher.add(f"rule-{number}", rule)
    matcher.match(b"{}")  # builds the snapshot outside the timing
    return matcher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="distinct events per round")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    events = [msgspec.json.encode(make_event(rng, n)) for n in range(args.events)]
    decoded = [msgspec.json.decode(event) for event in events]
    count = len(events)
    size = sum(map(len, events)) / count
    print(f"events: {count} distinct CloudEvents, mean {size:.0f} bytes of JSON")

    mixes = {name: [make(rng, n) for n in range(1000)] for name, make in MIXES.items()}
    # The set-up objects would be old in a long-running router; young, they make the first
    # passes pay for collecting them.
    gc.collect()
    gc.freeze()
    cases: dict[str, Case] = {}
    matched: dict[str, float] = {}
    for name, rules in mixes.items():
        m300 = _matcher(rules[:300])
        matched[name] = sum(len(m300.match(event)) for event in events) / count
        cases[f"{name} 300"] = (m300.match, events)
        cases[f"{name} 300 dict"] = (m300.match, decoded)
        cases[f"{name} 10"] = (_matcher(rules[:10]).match, events)
        cases[f"{name} 1000"] = (_matcher(rules[:1000]).match, events)
    rules = mixes["realistic"]
    single = compile_pattern(rules[0])
    cases["one rule, Matcher"] = (_matcher(rules[:1]).match, decoded)
    cases["one rule, compiled"] = (single.matches, decoded)
    rates = _rates(cases)
    for name in mixes:
        rate10, rate1000 = rates[f"{name} 10"], rates[f"{name} 1000"]
        print(
            f"{name + ' mix,':<15} 300 rules: {rates[f'{name} 300']:9,.0f} events/s bytes in "
            f"(decode included), {rates[f'{name} 300 dict']:9,.0f} dict in; "
            f"{matched[name]:.1f} rules match per event"
        )
        print(
            f"{'':15} 10 rules: {rate10:9,.0f} events/s, 1,000 rules: {rate1000:9,.0f} events/s;"
            f" cost of 1,000 rules / 10 rules: {rate10 / rate1000:.2f}x"
        )

    compiled: list[CompiledPattern] = [compile_pattern(rule) for rule in rules[:300]]

    def plain_loop(event: dict[str, Any]) -> list[int]:
        return [number for number, pattern in enumerate(compiled) if pattern.matches(event)]

    m300 = _matcher(rules[:300])
    loop = _rates(
        {"loop": (plain_loop, decoded[:100]), "matcher": (m300.match, decoded[:100])},
        rounds=2,
        passes=1,
    )
    names = [f"rule-{number}" for number in range(300)]
    for event in decoded[:100]:
        expected = [names[number] for number in plain_loop(event)]
        assert m300.match(event) == expected, "the Matcher disagrees with the plain loop"
    print("realistic mix, 300 rules, dict in, 100 events (the Matcher checked against the loop):")
    print(f"  plain loop over the compiled patterns: {loop['loop']:12,.0f} events/s")
    print(f"  Matcher:                               {loop['matcher']:12,.0f} events/s")
    print(f"one rule alone ({msgspec.json.encode(rules[0]).decode()}):")
    print(f"  Matcher (dict in):          {rates['one rule, Matcher']:12,.0f} events/s")
    print(f"  compiled pattern (dict in): {rates['one rule, compiled']:12,.0f} events/s")

    start = time.perf_counter()
    rebuilt = _matcher(rules[:300])
    print(f"building a 300-rule snapshot: {(time.perf_counter() - start) * 1000:.1f} ms")
    start = time.perf_counter()
    rebuilt.add("one-more", rules[300])
    rebuilt.remove("rule-0")
    print(
        f"add + remove one rule: {(time.perf_counter() - start) * 1e6:.0f} µs "
        "(the snapshot is rebuilt lazily on the next match)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
