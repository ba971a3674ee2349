#!/usr/bin/env python3
"""The benchmark suite's section of BENCHMARKS.md, from the JSON files tools/bench.sh
collects (RESULTS/<backend>.<round>/*.json, written by trunksim --json and echo-limit
client --json).

    tools/bench_report.py RESULTS COMMAND CORES LOADAVG BUILD
"""
import datetime
import json
import pathlib
import sys


def load(path):
    return json.loads(path.read_text())


def ratio(a, b):
    return f"{a / b:.3f}" if b else "n/a"


def main():
    results, command, cores, loadavg, build = sys.argv[1:6]
    runs = sorted(pathlib.Path(results).iterdir(), key=lambda p: (p.name.split(".")[0], int(p.name.split(".")[1])))
    today = datetime.date.today().isoformat()
    out = [
        "## The benchmark suite",
        "",
        f"Measured {today}, build `{build}`, on a machine of {cores} cores (load average at the end:"
        f" {loadavg}), with `{command}`. trunkd on a fresh copy of the provisioned HLR for every run;"
        " trunksim and the echo pair share the cores with the server. Every ratio is against the"
        " echo pair (`tools/echo-limit`) measured in the same round, right after trunkd.",
        "",
        "**Registrations** (`trunksim register`, window 32 per gateway; the echo: closed loop, window"
        " 32 per link). Target: at least 0.5 of the batched echo limit.",
        "",
        "| backend | round | trunkd registrations/s | p99 end to end | server p99 (accept) | echo limit/s | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        backend, rnd = run.name.split(".")
        reg, echo = load(run / "register.json"), load(run / "echo-register.json")
        server = (reg.get("server") or {}).get("accept") or {}
        out.append(
            f"| {backend} | {rnd} | {reg['rate_per_s']:,.0f} | {reg['latency']['p99_ms']:.2f} ms"
            f" | {server.get('p99_ms', float('nan')):.3f} ms | {echo['rate_per_s']:,.0f}"
            f" | {ratio(reg['rate_per_s'], echo['rate_per_s'])} |"
        )
    out += [
        "",
        "**Call setups, as many as trunkd grants** (`trunksim calls`, private calls offered above"
        " what trunkd carries; the echo: closed loop, window 32 per link, request → grant, PTT_RELEASE →"
        " ACK, CALL_END → CALL_END). Target: at least 0.8 of the echo limit.",
        "",
        "| backend | round | offered/s | granted/s | denied | echo limit/s | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        backend, rnd = run.name.split(".")
        calls, echo = load(run / "calls-max.json"), load(run / "echo-calls-max.json")
        offered = calls["requests"] / max(calls["elapsed_s"], 1e-9)
        denied = sum(d["count"] for d in calls["denied"])
        out.append(
            f"| {backend} | {rnd} | {offered:,.0f} | {calls['granted_per_s']:,.0f} | {denied:,}"
            f" | {echo['rate_per_s']:,.0f} | {ratio(calls['granted_per_s'], echo['rate_per_s'])} |"
        )
    out += [
        "",
        "**At a fixed rate** (`trunksim calls` offered the rate; the echo: open loop, Poisson"
        " arrivals at the same rate). Target: the server's own p99 request to grant, from its"
        " `/metrics`, under 1 ms.",
        "",
        "| backend | round | granted/s | server p99 (at once) | end-to-end p99 (at once) | echo pair p99 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        backend, rnd = run.name.split(".")
        calls, echo = load(run / "calls-rate.json"), load(run / "echo-calls-rate.json")
        server = (calls.get("server") or {}).get("granted_at_once") or {}
        out.append(
            f"| {backend} | {rnd} | {calls['granted_per_s']:,.0f} | {server.get('p99_ms', float('nan')):.3f} ms"
            f" | {calls['granted_at_once']['p99_ms']:.3f} ms | {echo['latency']['p99_ms']:.3f} ms |"
        )
    print("\n".join(out))


if __name__ == "__main__":
    main()
