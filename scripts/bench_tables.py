#!/usr/bin/env python3
"""Renders the JSON lines of a scripts/bench.sh run as the markdown tables of
docs/benchmarks.md. Usage: bench_tables.py RUN_DIR DATE MACHINE DURATION"""

import json
import os
import sys


def load(run_dir, name):
    with open(os.path.join(run_dir, name + ".json")) as f:
        figures = json.load(f)
    with open(os.path.join(run_dir, name + ".cmd")) as f:
        figures["command"] = f.read().strip()
    return figures


def num(value, digits=0):
    if isinstance(value, bool) or value is None:
        return str(value)
    return f"{value:,.{digits}f}"


def verdict(ok):
    return "met" if ok else "**not met**"


def write_tables(run):
    ours, ceiling = run("write-server"), run("write-ceiling")
    ours80, ceiling80 = run("write-server-80"), run("write-ceiling-80")
    ratio = ours["acked_ops_per_sec"] / ceiling["acked_ops_per_sec"]
    peaks = sorted(run(f"write-server-{i}")["acked_ops_per_sec"] for i in (1, 2, 3))
    rows = [
        ("acknowledged ops/s", "acked_ops_per_sec", 0),
        ("batch latency p50 (ms)", "batch_latency_p50_ms", 2),
        ("batch latency p99 (ms)", "batch_latency_p99_ms", 2),
        ("batch latency p99.9 (ms)", "batch_latency_p999_ms", 2),
        ("errors + timeouts", None, 0),
    ]
    out = [
        "### write",
        "",
        f"`{ours['command']}` (topgun-server, default durable mode) and "
        f"`{ceiling['command']}` (the ceiling): "
        f"{ours['connections']} connections, {ours['batch']} PUTs per batch, "
        f"{ours['in_flight']} batch in flight, {ours['value_size']}-byte values. "
        f"topgun-server ran three times, each on a fresh server ({', '.join(num(p) for p in peaks)} "
        "acknowledged ops/s); the table shows the median run.",
        "",
        "| Figure | topgun-server | ceiling | ratio |",
        "|---|---|---|---|",
    ]
    for label, key, digits in rows:
        if key is None:
            a = ours["errors"] + ours["timeouts"]
            b = ceiling["errors"] + ceiling["timeouts"]
            out.append(f"| {label} | {a} | {b} | |")
            continue
        a, b = ours[key], ceiling[key]
        out.append(f"| {label} | {num(a, digits)} | {num(b, digits)} | {a / b:.2f} |")
    out += [
        "",
        f"Paced at 80 % of the server's peak ({num(ours80['offered_ops_per_sec'])} ops/s offered; "
        "latency counted from when each batch was due):",
        "",
        "| Figure | topgun-server | ceiling |",
        "|---|---|---|",
        f"| acknowledged ops/s | {num(ours80['acked_ops_per_sec'])} | {num(ceiling80['acked_ops_per_sec'])} |",
        f"| batch latency p50 (ms) | {num(ours80['batch_latency_p50_ms'], 2)} | {num(ceiling80['batch_latency_p50_ms'], 2)} |",
        f"| batch latency p99 (ms) | {num(ours80['batch_latency_p99_ms'], 2)} | {num(ceiling80['batch_latency_p99_ms'], 2)} |",
        "",
        f"Targets: ≥ 50 % of the ceiling's acknowledged ops/s — {ratio:.0%}, "
        f"{verdict(ratio >= 0.5)}; p99 ≤ 10 ms at 80 % of peak — "
        f"{num(ours80['batch_latency_p99_ms'], 1)} ms, "
        f"{verdict(ours80['batch_latency_p99_ms'] <= 10)}.",
        "",
    ]
    return out


def fanout_table(run):
    f, c = run("fanout"), run("fanout-ceiling")
    ok = f["events_lost"] == 0 and f["delivery_latency_p99_ms"] <= 20

    def both(label, key, digits=0):
        a, b = f[key], c[key]
        ratio = f"{a / b:.2f}" if b else ""
        return f"| {label} | {num(a, digits)} | {num(b, digits)} | {ratio} |"

    return [
        "### fanout",
        "",
        f"`{f['command']}` (topgun-server) and `{c['command']}` (the ceiling, which "
        f"relays each write's PUTs to the map's subscribers with no other work): "
        f"{f['subscribers']} subscribers (`{f['subscribe_by']}`), one writer offering "
        f"{num(f['offered_writes_per_sec'])} writes/s.",
        "",
        "| Figure | topgun-server | ceiling | ratio |",
        "|---|---|---|---|",
        both("writes acknowledged", "writes_acked"),
        both("events received", "events_received"),
        f"| events lost / duplicated | {f['events_lost']} / {f['events_duplicated']} | "
        f"{c['events_lost']} / {c['events_duplicated']} | |",
        f"| subscribers disconnected | {f['subscribers_disconnected']} | "
        f"{c['subscribers_disconnected']} | |",
        both("delivery latency p50 (ms)", "delivery_latency_p50_ms", 1),
        both("delivery latency p99 (ms)", "delivery_latency_p99_ms", 1),
        both("delivery latency max (ms)", "delivery_latency_max_ms", 1),
        "",
        f"Target: zero lost events and p99 ≤ 20 ms at 1,000 × 1,000 — {verdict(ok)}. "
        f"The ceiling's own p99 is {num(c['delivery_latency_p99_ms'], 1)} ms "
        f"({verdict(c['delivery_latency_p99_ms'] <= 20)} by a server that does nothing else).",
        "",
    ]


def query_table(run):
    q = run("query")
    ok = q["updates_lost"] == 0 and q["updates_duplicated"] == 0
    return [
        "### query",
        "",
        f"`{q['command']}`: {num(q['queries'])} live queries on one map over "
        f"{q['connections']} connections, each write matching {q['matching_fraction']:.0%} "
        f"of them, one writer offering {num(q['offered_writes_per_sec'])} writes/s.",
        "",
        "| Figure | Value |",
        "|---|---|",
        f"| writes sent / acknowledged | {num(q['writes_sent'])} / {num(q['writes_acked'])} |",
        f"| updates expected / received | {num(q['updates_expected'])} / {num(q['updates_received'])} |",
        f"| updates lost / duplicated | {q['updates_lost']} / {q['updates_duplicated']} |",
        f"| write → QUERY_UPDATE latency p50 / p99 / max (ms) | {num(q['update_latency_p50_ms'], 1)} / "
        f"{num(q['update_latency_p99_ms'], 1)} / {num(q['update_latency_max_ms'], 1)} |",
        "",
        f"Every matching query told of every acknowledged write exactly once — {verdict(ok)}.",
        "",
    ]


def conns_table(run):
    c = run("conns")
    out = [
        "### conns",
        "",
        f"`{c['command']}` (JWT-authenticated idle connections, heartbeating):",
        "",
        "| Connections | Server RSS (MB) | Server bytes per connection | Connects/s |",
        "|---|---|---|---|",
    ]
    for step in c["steps"]:
        out.append(
            f"| {num(step['connections'])} | {num(step.get('server_rss_mb'), 1)} | "
            f"{num(step.get('server_bytes_per_conn'))} | {num(step.get('connects_per_sec'))} |"
        )
    per_conn = c.get("server_bytes_per_conn")
    ok = per_conn is not None and per_conn <= 10_000 and c["connections"] >= 10_000
    out += [
        "",
        f"Bytes per connection are (RSS − RSS before the first connection) ÷ connections. "
        f"Lost while held: {c['lost']}. Target: ≤ 10 KB per idle authenticated connection at "
        f"10,000 — {num(per_conn)} B at the end of the measured phase (the table's rows are "
        f"read as each step completes), {verdict(ok)}.",
        "",
    ]
    return out


def sync_table(run):
    s = run("sync")
    ok_full = s["full_seconds"] <= 2
    ok_resync = s["resync_bytes_per_changed_byte"] <= 1.5
    return [
        "### sync",
        "",
        f"`{s['command']}`: {num(s['keys'])} keys of {s['value_size']}-byte values, "
        f"{num(s['changed_keys'])} changed before the resync "
        f"({num(s['changed_record_bytes'])} bytes as leaf records).",
        "",
        "| Figure | Full sync (empty client) | Resync after the change |",
        "|---|---|---|",
        f"| seconds | {s['full_seconds']:.3f} | {s['resync_seconds']:.3f} |",
        f"| bytes received / sent | {num(s['full_bytes_in'])} / {num(s['full_bytes_out'])} | "
        f"{num(s['resync_bytes_in'])} / {num(s['resync_bytes_out'])} |",
        f"| bucket / leaf requests | {s['full_bucket_requests']} / {s['full_leaf_requests']} | "
        f"{s['resync_bucket_requests']} / {s['resync_leaf_requests']} |",
        f"| records received (of which unasked delta) | {num(s['full_records'])} ({s['full_delta_records']}) | "
        f"{num(s['resync_records'])} ({s['resync_delta_records']}) |",
        f"| client root equals the server's | {s['full_roots_match']} | {s['resync_roots_match']} |",
        "",
        f"Targets: full sync ≤ 2 s — {verdict(ok_full)}; resync ≤ 1.5 × the changed records' "
        f"bytes — {s['resync_bytes_per_changed_byte']:.2f} ×, {verdict(ok_resync)}.",
        "",
    ]


def main():
    run_dir, date, machine, duration = sys.argv[1:5]
    run = lambda name: load(run_dir, name)  # noqa: E731
    lines = [
        f"Produced by `./scripts/bench.sh` on {date}: {machine}; measured phases of "
        f"{duration} after a 2 s warm-up. The server and the load generator share the cores. "
        "The write runs, fanout, query and sync each start on a fresh server.",
        "",
    ]
    lines += write_tables(run) + fanout_table(run) + query_table(run) + conns_table(run)
    lines += sync_table(run)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
