#!/usr/bin/env python3
"""Writes REPORT.md and its plots (PNG) from what `scripts/bench` left in a directory:
machine.json, runs.jsonl (the commands run) and samples/*.json (the benchmarks' --samples
files and the memory readings). Usage: bench_report.py DIR. Needs matplotlib."""

import gzip
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The targets (2-core machine, loopback, metro timings).
DECISION_P99_MS = 1500
PROMOTION_P99_MS = 2500
DNS_P99_MS = 3500
COMMIT_P99_MS = 3.0
HEARTBEATS_PER_S = 10_000
HEARTBEAT_P99_MS = 50
RSS_MB_AT_100 = 40

# Scale (issue targets): 1,000 groups in steady state; a mass failover of 500.
SCALE_HB_P99_MS = 50
SCALE_CPU_CORES = 0.5
SCALE_RSS_MB = 100
MASS_DECIDED_MS = 1500
MASS_PROMOTED_P99_MS = 2500
MASS_LAST_DONE_MS = 5000

DETECTION = "failure -> decision committed"
PROMOTED = "failure -> survivor writable"
DNS = "failure -> DNS answers the survivor (queried)"
SEQUENTIAL = "Raft on the leader, 1 client (1)"


def load(out):
    samples = {}
    for f in sorted((out / "samples").glob("*.json*")):
        name = f.name.removesuffix(".gz").removesuffix(".json")
        try:
            text = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
            samples[name] = json.loads(text)
        except (OSError, json.JSONDecodeError) as e:
            samples[name] = {"error": f"unreadable samples file {f.name}: {e}"}
    runs = []
    runs_file = out / "runs.jsonl"
    if runs_file.exists():
        runs = [json.loads(line) for line in runs_file.read_text().splitlines() if line.strip()]
    machine = json.loads((out / "machine.json").read_text()) if (out / "machine.json").exists() else {}
    return machine, runs, samples


def series(doc, label):
    if not doc:
        return None
    return next((s for s in doc.get("series", []) if s["label"] == label), None)


def fmt_ms(v):
    if v is None:
        return "n/a"
    if v >= 100:
        return f"{v:.0f} ms"
    if v >= 10:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def verdict(ok):
    if ok is None:
        return "NOT MEASURED"
    return "**MET**" if ok else "**MISSED**"


def cdf(ax, values, label, **kw):
    v = sorted(values)
    n = len(v)
    ax.step([v[0], *v], [0, *((i + 1) / n for i in range(n))], where="post", label=f"{label} (n={n})", **kw)
    ax.set_ylim(0, 1.02)


def target_line(ax, x, text):
    ax.axvline(x, color="red", linestyle="--", linewidth=1)
    ax.text(x, 0.02, f"{text} ", color="red", rotation=90, va="bottom", ha="right", fontsize=8,
            transform=ax.get_xaxis_transform())


def save(fig, out, name):
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def quantile_table(rows):
    """rows: (label, series dict, extra columns...)"""
    lines = ["| series | n | p50 | p90 | p99 | max |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, s in rows:
        if s is None or not s.get("n"):
            lines.append(f"| {label} | 0 | | | | |")
            continue
        lines.append(
            f"| {label} | {s['n']} | {fmt_ms(s['p50_ms'])} | {fmt_ms(s['p90_ms'])} | "
            f"{fmt_ms(s['p99_ms'])} | {fmt_ms(s['max_ms'])} |"
        )
    return "\n".join(lines)


def p99_target(target, s, limit_ms, measured=None):
    """A latency target's row: met when series `s` has a p99 within `limit_ms`."""
    if not (s and s.get("n")):
        return (target, "not measured", None)
    return (target, measured or f"p99 {fmt_ms(s['p99_ms'])} over {s['n']} trials", s["p99_ms"] <= limit_ms)


def failed_note(doc, name):
    if doc is None:
        return f"\n*Not run: no samples from `{name}`.*\n"
    if doc.get("error"):
        return f"\n**The benchmark failed:** `{doc['error']}` (what it measured until then is shown).\n"
    return ""


def main():
    out = Path(sys.argv[1])
    machine, runs, samples = load(out)
    md = []
    targets = []  # (target, measured, ok)

    # --- Detection -----------------------------------------------------------------------
    fo = samples.get("failover")
    det = series(fo, DETECTION)
    sec_detection = ["## Detection latency: failure -> decision committed", ""]
    sec_detection.append(
        "`witness bench failover`: three witness nodes in one process probe two site stubs over "
        "HTTP on loopback with the metro timings. Each trial kills the active site's health "
        "endpoint and waits until the leader has committed and applied the failover; the site then "
        "comes back as standby, the failover is acknowledged, and the next trial kills the new "
        "active site."
    )
    sec_detection.append(failed_note(fo, "bench failover"))
    if det and det["n"]:
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        a.hist(det["ms"], bins=min(40, max(5, det["n"] // 5)), color="tab:blue")
        a.set_xlabel("ms")
        a.set_ylabel("trials")
        a.set_title("detection latency, histogram")
        target_line(a, DECISION_P99_MS, "target p99")
        cdf(b, det["ms"], "failure -> decision")
        target_line(b, DECISION_P99_MS, "target p99 1.5 s")
        b.set_xlabel("ms")
        b.set_ylabel("share of trials")
        b.set_title("detection latency, CDF")
        b.grid(alpha=0.3)
        png = save(fig, out, "detection.png")
        sec_detection += ["", quantile_table([(DETECTION, det)]), "", f"![detection latency]({png})", ""]
    targets.append(p99_target("decision committed, p99 <= 1.5 s", det, DECISION_P99_MS))

    # --- End to end through BIND -----------------------------------------------------------
    pl = samples.get("plan-dns")
    sec_dns = ["## End-to-end failover: failure -> DNS updated in BIND 9", ""]
    sec_dns.append(
        "`scripts/bench-plan` starts BIND 9 on a loopback port with a TSIG key and the zone "
        "`example.test.` and runs `witness bench plan --dns-server ...`: group `demo` has a plan "
        "of a webhook, a command and a TSIG-signed RFC 2136 update of BIND's record. Each trial "
        "kills the active site's health endpoint and times the decision, each step seen done on "
        "the leader, and, queried independently by the benchmark every 10 ms, BIND answering the "
        "survivor's address."
    )
    sec_dns.append(failed_note(pl, "scripts/bench-plan"))
    if pl and pl.get("series"):
        order = sorted(pl["series"], key=lambda s: (s["label"].startswith("decision ->"), s.get("p50_ms") or 0))
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for s in order:
            if s["label"].startswith("failure ->") and s["n"]:
                cdf(ax, s["ms"], s["label"].removeprefix("failure -> "))
        target_line(ax, DNS_P99_MS, "target p99 3.5 s")
        ax.set_xlabel("ms after the failure")
        ax.set_ylabel("share of trials")
        ax.set_title("failure -> decision, plan steps, DNS answering the survivor")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
        png = save(fig, out, "failover-dns.png")
        sec_dns += ["", quantile_table([(s["label"], s) for s in order]), "", f"![failure to DNS]({png})", ""]
    targets.append(p99_target("failure -> DNS updated in BIND, p99 <= 3.5 s", series(pl, DNS), DNS_P99_MS))

    # --- Promotion ---------------------------------------------------------------------------
    pr = samples.get("promotion")
    prom = series(pr, PROMOTED)
    sec_prom = ["## Lease-safe promotion: failure -> survivor writable", ""]
    sec_prom.append(
        "`witness bench promotion`: the same three witness nodes and two site agents (heartbeats "
        "every 250 ms, lease 1 s + 100 ms margin). Each trial stops the active site's health "
        "endpoint and its agent, and waits for the surviving agent's own verdict that it may "
        "write: detection, decision, lease waits, drain and promotion."
    )
    sec_prom.append(failed_note(pr, "bench promotion"))
    if prom and prom["n"]:
        fig, ax = plt.subplots(figsize=(7, 4))
        cdf(ax, prom["ms"], "failure -> survivor writable")
        if det and det["n"]:
            cdf(ax, det["ms"], "failure -> decision (bench failover)", linestyle=":")
        target_line(ax, PROMOTION_P99_MS, "target p99 2.5 s")
        ax.set_xlabel("ms")
        ax.set_ylabel("share of trials")
        ax.set_title("lease-safe promotion, CDF")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
        png = save(fig, out, "promotion.png")
        sec_prom += ["", quantile_table([(PROMOTED, prom)]), "", f"![promotion]({png})", ""]
    targets.append(p99_target("survivor promoted (lease-safe), p99 <= 2.5 s", prom, PROMOTION_P99_MS))

    # --- Soak --------------------------------------------------------------------------------
    sec_soak = ["## False failovers under probe loss", ""]
    sec_soak.append(
        "`witness bench soak`: both sites stay up while each site's health endpoint drops the "
        "given share of probes (holding them past the probe timeout, as lost packets look); the "
        "false failovers are the group's epoch changes during the soak. The two soaks ran side by "
        "side, each with its own three nodes and stubs."
    )
    rows = ["| probe loss | duration | false failovers | journal entries during the soak | result |",
            "| ---: | ---: | ---: | --- | --- |"]
    soak_ok = []
    soak_seen = []
    for name in ("soak-5", "soak-10"):
        d = samples.get(name)
        if not d or "false_failovers" not in d:
            rows.append(f"| {name.split('-')[1]}% | | not measured | {d.get('error', '') if d else ''} | NOT MEASURED |")
            continue
        kinds = ", ".join(f"{k}: {v}" for k, v in d.get("journal_by_kind", {}).items()) or "none"
        ok = d["false_failovers"] == 0
        soak_ok.append(ok)
        soak_seen.append(f"{d['false_failovers']} at {d['loss'] * 100:.0f}%")
        minutes = d["duration_s"] / 60
        rows.append(
            f"| {d['loss'] * 100:.0f}% | {minutes:.1f} min | {d['false_failovers']} | {kinds} | {verdict(ok)} |"
        )
    sec_soak += ["", *rows, ""]
    total_min = sum(samples[n]["duration_s"] for n in ("soak-5", "soak-10") if n in samples and "duration_s" in samples[n]) / 60
    targets.append((
        "zero false failovers at <= 10% probe loss",
        f"{', '.join(soak_seen)} ({total_min:.0f} min in all)" if soak_seen else "not measured",
        (all(soak_ok) if len(soak_ok) == 2 else (False if soak_ok and not all(soak_ok) else None)),
    ))

    # --- Raft ----------------------------------------------------------------------------------
    rt, rp = samples.get("raft"), samples.get("raft-plain-http")
    sec_raft = ["## Raft commit latency with fsync", ""]
    sec_raft.append(
        "`witness bench raft`: a 3-node cluster in one process, each node's log on the data "
        "disk with fsync; first the disk's own fdatasync latency (4 KiB appends), then writes "
        "(pause or resume a group: a real committed change) straight into the leader's Raft and "
        "through the HTTP API, sequential (1 client) and concurrent. `--plain-http` runs the same "
        "without TLS."
    )
    sec_raft.append(failed_note(rt, "bench raft"))
    if rt and rt.get("series"):
        lines = ["| run | TLS: p50 | p99 | max | writes/s | plain HTTP: p50 | p99 | max | writes/s |",
                 "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for s in rt["series"]:
            p = series(rp, s["label"]) if rp else None
            cells = lambda x: (f"{fmt_ms(x['p50_ms'])} | {fmt_ms(x['p99_ms'])} | {fmt_ms(x['max_ms'])} | "
                               + (f"{x['writes_per_s']:.0f}" if "writes_per_s" in x else "")) if x and x.get("n") else " | | | "
            lines.append(f"| {s['label']} | {cells(s)} | {cells(p)} |")
        fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
        for s in rt["series"]:
            if s["label"].startswith("disk") or "1 client" in s["label"]:
                cdf(a, s["ms"], s["label"].replace(" (1)", ""))
        a.axvline(COMMIT_P99_MS, color="red", linestyle="--", linewidth=1, label="target p99 3 ms")
        a.set_xscale("log")
        a.set_xlabel("ms (log)")
        a.set_ylabel("share of writes")
        a.set_title("sequential commits vs the disk's fdatasync (TLS)")
        a.legend(fontsize=7, loc="lower right")
        a.grid(alpha=0.3)
        labels = [s["label"].replace(" (1)", "").replace("Raft on the leader", "Raft").replace("HTTP API to ", "API to ")
                  for s in rt["series"]]
        x = range(len(rt["series"]))
        w = 0.2
        b.bar([i - 1.5 * w for i in x], [s["p50_ms"] for s in rt["series"]], w, label="TLS p50")
        b.bar([i - 0.5 * w for i in x], [s["p99_ms"] for s in rt["series"]], w, label="TLS p99")
        if rp:
            pv = [series(rp, s["label"]) for s in rt["series"]]
            b.bar([i + 0.5 * w for i in x], [p["p50_ms"] if p else 0 for p in pv], w, label="plain HTTP p50")
            b.bar([i + 1.5 * w for i in x], [p["p99_ms"] if p else 0 for p in pv], w, label="plain HTTP p99")
        b.axhline(COMMIT_P99_MS, color="red", linestyle="--", linewidth=1)
        b.set_xticks(list(x))
        b.set_xticklabels(labels, rotation=25, ha="right", fontsize=7)
        b.set_yscale("log")
        b.set_ylabel("ms (log)")
        b.set_title("commit latency by run")
        b.legend(fontsize=7)
        png = save(fig, out, "raft.png")
        sec_raft += ["", *lines, "", f"![raft commit latency]({png})", ""]
    seq = series(rt, SEQUENTIAL)
    fs = series(rt, "disk fdatasync (4 KiB append)")
    extra = f"; the disk's fdatasync p99 {fmt_ms(fs['p99_ms'])}" if fs and fs.get("n") else ""
    measured = f"p99 {fmt_ms(seq['p99_ms'])} (Raft on the leader, 1 client){extra}" if seq and seq.get("n") else None
    targets.append(p99_target("sequential commit with fsync, p99 <= 3 ms", seq, COMMIT_P99_MS, measured))

    # --- Heartbeats -----------------------------------------------------------------------------
    sec_hb = ["## Heartbeat ingest", ""]
    sec_hb.append(
        "`witness bench heartbeats`: concurrent clients in the same process post agent "
        "heartbeats (with the two sites' tokens, the rate limit lifted) to the leader of a 3-node "
        "cluster over HTTPS, as fast as their connections allow; answers per second and latency. "
        "The clients share the machine's 2 cores with the three nodes."
    )
    hb = []
    for name, d in samples.items():
        if name.startswith("heartbeats-") and d.get("series"):
            s = series(d, "heartbeat answered")
            if s and s.get("n"):
                hb.append((d["clients"], d.get("tls", True), s, d))
    errors = [f"`{n}`: {d['error']}" for n, d in samples.items() if n.startswith("heartbeats-") and d.get("error")]
    if errors:
        sec_hb.append("\n**Failed:** " + "; ".join(errors) + "\n")
    hb.sort(key=lambda r: (not r[1], r[0]))
    if hb:
        lines = ["| clients | transport | heartbeats/s | p50 | p99 | max | p99 < 50 ms |",
                 "| ---: | --- | ---: | ---: | ---: | ---: | --- |"]
        for clients, tls, s, _ in hb:
            lines.append(
                f"| {clients} | {'HTTPS' if tls else 'plain HTTP'} | {s['per_s']:.0f} | {fmt_ms(s['p50_ms'])} | "
                f"{fmt_ms(s['p99_ms'])} | {fmt_ms(s['max_ms'])} | {'yes' if s['p99_ms'] < HEARTBEAT_P99_MS else 'no'} |"
            )
        tls_rows = [r for r in hb if r[1]]
        fig, a = plt.subplots(figsize=(7, 4.5))
        xs = [r[0] for r in tls_rows]
        a.plot(xs, [r[2]["per_s"] for r in tls_rows], "o-", color="tab:blue", label="heartbeats/s (HTTPS)")
        a.axhline(HEARTBEATS_PER_S, color="tab:blue", linestyle="--", linewidth=1, label="target 10,000/s")
        a.set_xscale("log", base=2)
        a.set_xticks(xs)
        a.set_xticklabels([str(x) for x in xs])
        a.set_xlabel("concurrent clients")
        a.set_ylabel("heartbeats answered per second")
        a.set_ylim(bottom=0)
        b = a.twinx()
        b.plot(xs, [r[2]["p99_ms"] for r in tls_rows], "s-", color="tab:orange", label="p99 latency")
        b.axhline(HEARTBEAT_P99_MS, color="tab:orange", linestyle="--", linewidth=1, label="p99 bound 50 ms")
        b.set_ylabel("p99 latency (ms)")
        b.set_ylim(bottom=0)
        h1, l1 = a.get_legend_handles_labels()
        h2, l2 = b.get_legend_handles_labels()
        a.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
        a.set_title("heartbeat ingest on one leader")
        png = save(fig, out, "heartbeats.png")
        sec_hb += ["", *lines, "", f"![heartbeats]({png})", ""]
        within = [r for r in tls_rows if r[2]["p99_ms"] < HEARTBEAT_P99_MS]
        if within:
            best = max(within, key=lambda r: r[2]["per_s"])
            ok = best[2]["per_s"] >= HEARTBEATS_PER_S
            measured = f"{best[2]['per_s']:.0f}/s at {best[0]} clients (p99 {fmt_ms(best[2]['p99_ms'])}, HTTPS)"
        else:
            ok = False
            measured = "no client count kept p99 under 50 ms"
        targets.append((">= 10,000 heartbeats/s on one leader with p99 < 50 ms", measured, ok))
    else:
        targets.append((">= 10,000 heartbeats/s on one leader with p99 < 50 ms", "not measured", None))

    # --- Memory ---------------------------------------------------------------------------
    sec_mem = ["## Memory of a node by number of sites", ""]
    mem = sorted((d for n, d in samples.items() if n.startswith("memory-")), key=lambda d: d["sites"])
    settle = mem[0]["settle_s"] if mem else 10
    sec_mem.append(
        "One node process (`witness serve --config GENERATED`, the release build: a 1-node cluster on "
        "TLS with the development CA) with N sites, each probed over TCP at a closed loopback port "
        "with the metro timings (every 150 ms), and N/2 automatic groups pairing them. VmRSS is "
        f"read from `/proc/PID/status` once the node is ready and has run for {settle} s; VmHWM "
        "is the peak; MB are 10^6 bytes. `logs/memory-10.toml` is the generated config for 10 sites."
    )
    if mem:
        lines = ["| sites | groups | VmRSS | of which anonymous | of which file-backed | VmHWM (peak) | sites in status |",
                 "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        mb = lambda kib: f"{kib * 1024 / 1e6:.1f} MB" if kib else ""
        for d in mem:
            rss = mb(d.get("rss_kib")) or "not ready"
            lines.append(
                f"| {d['sites']} | {d['groups']} | {rss} | {mb(d.get('rss_anon_kib'))} | {mb(d.get('rss_file_kib'))} | "
                f"{mb(d.get('hwm_kib'))} | {d.get('sites_in_status')} |"
            )
        fig, a = plt.subplots(figsize=(6, 4))
        ok_rows = [d for d in mem if d.get("rss_kib")]
        a.bar([str(d["sites"]) for d in ok_rows], [d["rss_kib"] * 1024 / 1e6 for d in ok_rows], color="tab:green")
        for i, d in enumerate(ok_rows):
            a.text(i, d["rss_kib"] * 1024 / 1e6, f"{d['rss_kib'] * 1024 / 1e6:.1f}", ha="center", va="bottom", fontsize=8)
        a.axhline(RSS_MB_AT_100, color="red", linestyle="--", linewidth=1, label="target at 100 sites: 40 MB")
        a.set_xlabel("sites")
        a.set_ylabel("VmRSS (MB)")
        a.set_title(f"node memory after {settle} s")
        a.legend(fontsize=8)
        png = save(fig, out, "memory.png")
        sec_mem += ["", *lines, "", f"![memory]({png})", ""]
    m100 = next((d for d in mem if d["sites"] == 100 and d.get("rss_kib")), None)
    if m100:
        mb = m100["rss_kib"] * 1024 / 1e6
        if mb > RSS_MB_AT_100:
            note = (f"At 100 sites the node holds {mb:.1f} MB, {mb - RSS_MB_AT_100:.1f} MB over the 40 MB target: "
                    "the target is missed.")
            if m100.get("rss_anon_kib") and m100.get("rss_file_kib"):
                note += (f" Of it, {m100['rss_anon_kib'] * 1024 / 1e6:.1f} MB is anonymous memory (heap, stacks) "
                         f"and {m100['rss_file_kib'] * 1024 / 1e6:.1f} MB file-backed pages (the mapped binary and "
                         "libraries).")
            sec_mem += [note, ""]
        targets.append(("RSS <= 40 MB at 100 sites", f"{mb:.1f} MB ({m100['rss_kib'] / 1024:.1f} MiB)", mb <= RSS_MB_AT_100))
    else:
        targets.append(("RSS <= 40 MB at 100 sites", "not measured", None))

    # --- Scale -----------------------------------------------------------------------------
    sec_scale = ["## Scale: many groups, and a whole site failing at once", ""]
    sec_scale.append(
        "`scripts/bench-scale --groups N --steady 60s --mass-failover`: three `witness serve` processes "
        "(release build, TLS from a development CA) with N groups on sites east (primary) and west, each "
        "site with one real agent process heartbeating for all N groups every 250 ms (so 2 agents, not "
        "one per group: the many-site-pairs shape below has those), each group's plan a webhook and an "
        "RFC 2136 update of its own record in one zone of a real BIND 9 and a Route 53 change of its own record "
        "in a hosted zone of moto's Route 53 API (the steps of one zone arriving together share their requests); "
        "plus one group `solo` on two "
        "other sites without agents. Steady state first (heartbeat round trip from the agent's histogram, "
        "read as bucket upper bounds; CPU and RSS from /proc; the Raft log's growth; `/v1/status`), then "
        "`solo`'s primary dies while every other group stays, then east dies whole (its health endpoint, "
        "and its agent with kill -9): each group's failure -> decided, -> promoted and -> plan complete "
        "from the journal (the leader's wall clock, on this machine), BIND queried until it answers "
        "west for every record, and the Route 53 zone listed until it holds west for every record (with the "
        "number of changes the steps' results name)."
    )
    # Samples from before the pairs shape carry no shape: they are the sites shape.
    def of_shape(shape):
        return sorted((d for n, d in samples.items()
                       if n.startswith("scale-") and "groups" in d and d.get("shape", "sites") == shape),
                      key=lambda d: d["groups"])

    scale, pairs = of_shape("sites"), of_shape("pairs")
    for n, d in samples.items():
        if n.startswith("scale-") and d.get("error"):
            sec_scale.append(f"\n**`{n}` failed:** `{d['error']}` (what it measured until then is shown).\n")

    def field(d, suffix, prefix=""):
        vals = [v for k, v in d.items() if k.startswith(prefix) and k.endswith(suffix) and isinstance(v, (int, float))]
        return max(vals) if vals else None

    def sval(d, label, key):
        x = series(d, label)
        return x.get(key) if x and x.get("n") else None

    if scale:
        lines = ["| groups | heartbeat p50 / p99 | leader CPU (cores) | RSS, largest node | log entries/h | snapshot | "
                 "`/v1/status` size, p99 | one group's failure -> decided |",
                 "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for d in scale:
            num = lambda v, f: f.format(v) if v is not None else "n/a"
            lines.append(
                f"| {d['groups']} | {num(d.get('heartbeat_p50_ms'), '<= {:.0f} ms')} / {num(d.get('heartbeat_p99_ms'), '<= {:.0f} ms')} | "
                f"{num(field(d, '_cpu_cores', 'leader_'), '{:.2f}')} | {num(field(d, '_rss_mb'), '{:.0f} MB')} | "
                f"{num(d.get('log_entries_per_hour'), '{:.0f}')} | {num(d.get('snapshot_kb'), '{:.0f} KB')} | "
                f"{num(d.get('status_kb'), '{:.0f} KB')}, {fmt_ms(sval(d, '/v1/status', 'p99_ms'))} | "
                f"{fmt_ms(sval(d, 'solo failure -> decided', 'max_ms'))} |"
            )
        sec_scale += ["", "Steady state:", "", *lines, ""]
        lines = ["| groups failing over | -> decided p99, last | -> promoted p99, last | -> plan complete p99, last | "
                 "-> BIND answers the survivor for every record | -> Route 53 holds it for every record (changes made) | "
                 "log entries |",
                 "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for d in scale:
            cell = lambda label: (f"{fmt_ms(sval(d, label, 'p99_ms'))}, {fmt_ms(sval(d, label, 'max_ms'))}"
                                  if sval(d, label, "n") else "n/a")
            every = series(d, "mass failure -> DNS answers the survivor for every record")
            r53 = sval(d, "mass failure -> Route 53 holds the survivor for every record", "max_ms")
            r53 = f"{fmt_ms(r53)} ({d.get('mass_failover_route53_changes', '?')})" if r53 is not None else "n/a"
            entries = f"{d['mass_failover_log_entries']:.0f}" if "mass_failover_log_entries" in d else "n/a"
            lines.append(
                f"| {d['groups']} | {cell('mass failure -> decided')} | {cell('mass failure -> promoted')} | "
                f"{cell('mass failure -> plan complete')} | {fmt_ms(every['max_ms']) if every and every.get('n') else 'n/a'} | "
                f"{r53} | {entries} |"
            )
        sec_scale += ["Mass failover (every group of the dead site):", "", *lines, ""]
        fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
        gs = [d["groups"] for d in scale]
        a.plot(gs, [d.get("heartbeat_p99_ms") or 0 for d in scale], "o-", label="heartbeat p99 (ms, bucket bound)")
        a.plot(gs, [(field(d, "_cpu_cores", "leader_") or 0) * 100 for d in scale], "s-", label="leader CPU (% of a core)")
        a.plot(gs, [field(d, "_rss_mb") or 0 for d in scale], "^-", label="largest node RSS (MB)")
        a.axhline(SCALE_RSS_MB, color="red", linestyle="--", linewidth=1, label="RSS bound 100 MB, CPU 50 %, p99 50 ms")
        a.axhline(SCALE_HB_P99_MS, color="red", linestyle=":", linewidth=1)
        a.set_xlabel("groups")
        a.set_title("steady state by number of groups")
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
        for d, style in zip(scale, ["-", "--", ":", "-."]):
            for label, color in (("decided", "tab:blue"), ("promoted", "tab:orange"), ("plan complete", "tab:green")):
                x = series(d, f"mass failure -> {label}")
                if x and x.get("n"):
                    cdf(b, x["ms"], f"{d['groups']}: {label}", color=color, linestyle=style)
        target_line(b, MASS_LAST_DONE_MS, "last plan done 5 s")
        b.set_xlabel("ms after the failure")
        b.set_ylabel("share of groups")
        b.set_title("mass failover, per group")
        b.legend(fontsize=6, loc="lower right")
        b.grid(alpha=0.3)
        png = save(fig, out, "scale.png")
        sec_scale += [f"![scale]({png})", ""]
    if pairs:
        sec_scale += [
            "Many site pairs (`witness bench scale --shape pairs --groups N --steady 60s`): N sites in N/2 pairs, "
            "each pair hosting two groups (one with each site as primary), each site with its own health endpoint "
            "and its own agent. The N agents are simulated by the benchmark process: the product's agent code, one "
            "instance per site with its own config, listener and site certificate from the development CA, "
            "heartbeating the three node processes every 250 ms over mutual TLS and exchanging peer leases with "
            "its pair's agent. Heartbeat round trip from every agent's histogram, summed (bucket upper bounds); "
            "the benchmark process's CPU (all agents, all health endpoints) is shown apart. Then one site's "
            "endpoint and agent die: its group's failure -> decided while every other group stays.",
            "",
            "| sites = groups = agents | heartbeat p50 / p99 | heartbeats/s | leader CPU (cores) | RSS, largest node | "
            "benchmark process CPU (the agents) | log entries/h | snapshot | `/v1/status` size, p99 | "
            "one group's failure -> decided |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for d in pairs:
            num = lambda v, f: f.format(v) if v is not None else "n/a"
            rate = d.get("heartbeats_per_s")
            sec_scale.append(
                f"| {d['groups']} | {num(d.get('heartbeat_p50_ms'), '<= {:.0f} ms')} / {num(d.get('heartbeat_p99_ms'), '<= {:.0f} ms')} | "
                f"{num(rate, '{:.0f}')} | {num(field(d, '_cpu_cores', 'leader_'), '{:.2f}')} | "
                f"{num(field(d, '_rss_mb'), '{:.0f} MB')} | {num(d.get('bench-process_cpu_cores'), '{:.2f}')} | "
                f"{num(d.get('log_entries_per_hour'), '{:.0f}')} | {num(d.get('snapshot_kb'), '{:.0f} KB')} | "
                f"{num(d.get('status_kb'), '{:.0f} KB')}, {fmt_ms(sval(d, '/v1/status', 'p99_ms'))} | "
                f"{fmt_ms(sval(d, 'one group failure -> decided', 'max_ms'))} |"
            )
        sec_scale.append("")
    s1000 = next((d for d in scale if d["groups"] == 1000), None)
    if s1000:
        hb99, cpu, rss = s1000.get("heartbeat_p99_ms"), field(s1000, "_cpu_cores", "leader_"), field(s1000, "_rss_mb")
        solo = sval(s1000, "solo failure -> decided", "max_ms")
        # The heartbeat p99 is a bucket's upper bound (the agent's buckets: ..., 20, 50, 100 ms):
        # within the 50 ms bucket is as close to "< 50 ms" as the histogram can tell.
        ok = None if None in (hb99, cpu, rss, solo) else (hb99 <= SCALE_HB_P99_MS and cpu < SCALE_CPU_CORES
                                                          and rss <= SCALE_RSS_MB and solo <= DECISION_P99_MS)
        targets.append(("1,000 groups steady: heartbeat p99 < 50 ms, leader CPU < 0.5 core, RSS <= 100 MB, one failure -> decided <= 1.5 s",
                        f"p99 <= {hb99:.0f} ms, {cpu:.2f} core, {rss:.0f} MB, {solo:.0f} ms (2 agents for 1,000 groups)" if ok is not None else "not measured", ok))
    else:
        targets.append(("1,000 groups steady: heartbeat p99 < 50 ms, leader CPU < 0.5 core, RSS <= 100 MB, one failure -> decided <= 1.5 s", "not measured", None))
    p1000 = next((d for d in pairs if d["groups"] == 1000), None)
    goal = ("many site pairs, 1,000 sites, groups and agents: heartbeat p99 < 50 ms, leader CPU < 0.5 core, "
            "RSS <= 100 MB, one failure -> decided <= 1.5 s")
    if p1000:
        hb99, cpu, rss = p1000.get("heartbeat_p99_ms"), field(p1000, "_cpu_cores", "leader_"), field(p1000, "_rss_mb")
        one = sval(p1000, "one group failure -> decided", "max_ms")
        ok = None if None in (hb99, cpu, rss, one) else (hb99 <= SCALE_HB_P99_MS and cpu < SCALE_CPU_CORES
                                                         and rss <= SCALE_RSS_MB and one <= DECISION_P99_MS)
        targets.append((goal, f"p99 <= {hb99:.0f} ms, {cpu:.2f} core, {rss:.0f} MB, {one:.0f} ms (agents simulated in one process)"
                        if ok is not None else "not measured", ok))
    else:
        targets.append((goal, "not measured: on 2 cores, 1,000 sites' agents and health endpoints (simulated in the "
                        "benchmark process) do not fit beside the three nodes (README, `bench scale`); measured at "
                        f"{', '.join(str(d['groups']) for d in pairs) or 'no count'}", None))
    s500 = next((d for d in scale if d["groups"] == 500), None)
    if s500:
        dec, prom = sval(s500, "mass failure -> decided", "max_ms"), sval(s500, "mass failure -> promoted", "p99_ms")
        every = series(s500, "mass failure -> DNS answers the survivor for every record")
        done = every["max_ms"] if every and every.get("n") else None
        ok = None if None in (dec, prom, done) else (dec <= MASS_DECIDED_MS and prom <= MASS_PROMOTED_P99_MS and done <= MASS_LAST_DONE_MS)
        targets.append(("mass failover of 500 groups: all decided <= 1.5 s, promoted p99 <= 2.5 s, BIND answers for all <= 5 s",
                        f"last decided {fmt_ms(dec)}, promoted p99 {fmt_ms(prom)}, BIND all {fmt_ms(done)}" if ok is not None else "not measured", ok))
    else:
        targets.append(("mass failover of 500 groups: all decided <= 1.5 s, promoted p99 <= 2.5 s, BIND answers for all <= 5 s", "not measured", None))

    # --- Engine ----------------------------------------------------------------------------
    sec_engine = ["## The pure cores by number of groups", ""]
    eng = samples.get("engine")
    goal = "the engine's cost per step grows no worse than linearly in the groups (cost per group, most groups against fewest)"
    if eng and eng.get("series"):
        sec_engine += [
            "`witness bench engine`: the shipped `Leader`, `State` and snapshot encoding in one process, without "
            "I/O, every group on east (primary) and west with agents and a webhook step; the verdicts and the "
            "agents' heartbeats made up as the runtime hands them in. Median of 5 runs (a steady tick and a "
            "heartbeat: of 200 in each). The runtime ticks every 50 ms.",
            "",
            "| groups | steady tick | one agent's heartbeat (every group) | tick deciding every group's failover | "
            "its commands in entries | applying them | snapshot | encode / decode |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for x in eng["series"]:
            sec_engine.append(
                f"| {x['label'].split()[0]} | {x['steady_tick_ms']:.3f} ms | {x['heartbeat_ms']:.3f} ms | "
                f"{x['deciding_tick_ms']:.3f} ms | {x['proposals']} in {x['entries']} | {x['apply_ms']:.3f} ms | "
                f"{x['snapshot_bytes'] / 1024:.0f} KB | {x['snapshot_encode_ms']:.1f} / {x['snapshot_decode_ms']:.1f} ms |"
            )
        growth = {k.removeprefix("growth_").replace("_", " "): v for k, v in eng.items() if k.startswith("growth_")}
        shown = ", ".join(f"{k} {v:.2f}" for k, v in growth.items())
        per_group = ", ".join(f"{x['label'].split()[0]}: {x['steady_tick_ms'] * 1000 / int(x['label'].split()[0]):.2f}"
                              for x in eng["series"])
        sec_engine += ["", f"Cost per group at the most groups against the fewest (1.00 is linear): {shown}. A "
                       "steady tick per group, in microseconds by number of groups: " + per_group + ". The tick "
                       "and the heartbeat walk the state's groups and the leader's own per-group maps side by "
                       "side in key order (`keyed`): no step searches a map per group but the RPO watch, once "
                       "for the standby's report. What still grows per group is memory: the cost per group is "
                       "flat while the groups' state fits the CPU's caches and rises once it does not.", ""]
        # Linear within a factor of 1.5 per group over the range (a log factor and cache misses aside).
        worst = max(growth.values()) if growth else None
        ok = None if worst is None else worst <= 1.5
        targets.append((goal, shown, ok))
    else:
        targets.append((goal, "not measured", None))

    # --- Assemble ---------------------------------------------------------------------------
    md.append("# Benchmark report")
    md.append("")
    if machine.get("mode") == "quick":
        md.append("**A quick run (`scripts/bench --quick`): few trials and short soaks, to check the pipeline; "
                  "its numbers are not the measurement.**\n")
    dirty = " (with uncommitted changes)" if machine.get("git_dirty") else ""
    disk = machine.get("disk", {})
    md += [
        f"* Date: {machine.get('date', '?')}",
        f"* Machine: {machine.get('nproc', '?')} CPUs ({machine.get('cpu', '?')}), {machine.get('ram_gib', '?')} GiB RAM, "
        f"Linux {machine.get('kernel', '?')}",
        f"* Data directory: `{machine.get('data_dir', '?')}` on {disk.get('source', '?')} ({disk.get('fstype', '?')}, "
        f"{disk.get('size', '?')}{', ' + disk['lsblk'] if disk.get('lsblk') else ''})",
        f"* Commit: `{machine.get('git_commit', '?')}`{dirty}; {machine.get('rustc', '')}",
        f"* Load average (1, 5, 15 min) at the start: {' '.join(machine.get('loadavg_at_start', ['?']))}; "
        f"when the report was written: {' '.join(open('/proc/loadavg').read().split()[:3])}",
        "* Everything on loopback; the metro timings of `config/dev/` (probes every 150 ms, timeout "
        "120 ms, down after 5 failures, hold-down 400 ms).",
        "",
        "## Targets",
        "",
        "| target | measured | result |",
        "| --- | --- | --- |",
    ]
    for t, m, ok in targets:
        md.append(f"| {t} | {m} | {verdict(ok)} |")
    missed = [t for t, _, ok in targets if ok is False]
    unmeasured = [t for t, _, ok in targets if ok is None]
    md.append("")
    if missed:
        md.append("Missed: " + "; ".join(missed) + ". The sections below give the numbers.")
    else:
        md.append("Every target measured was met.")
    if unmeasured:
        md.append("")
        md.append("Not measured (a benchmark failed or did not run): " + "; ".join(unmeasured) + ".")
    failed = [r for r in runs if r["exit"] != 0]
    if failed:
        md.append("")
        md.append("Benchmarks that exited with an error: "
                  + ", ".join(f"`{r['name']}` (exit {r['exit']})" for r in failed)
                  + "; their output is in `logs/`.")
    md.append("")
    for sec in (sec_detection, sec_prom, sec_dns, sec_scale, sec_engine, sec_soak, sec_raft, sec_hb, sec_mem):
        md += sec
        md.append("")
    md += ["## Commands run", "", "From the repository root with `WITNESS_LOG=warn`, in this order (the two soaks side by side; "
           "the memory runs' configs were generated into a temporary directory). `target/bench-bin/witness` "
           "is a copy of the release build made at the start, so that no build during the run changes the "
           "binary under test; `scripts/bench-plan` runs `target/release/witness` right after it was built. "
           "The load average after each command shows other work on the machine at the time:", "", "```sh"]
    for r in runs:
        after = f", load {r['loadavg_1m_after']:.1f} after" if "loadavg_1m_after" in r else ""
        md.append(f"{r['command']}  # {r['name']}: exit {r['exit']}, {r['seconds']:.0f} s{after}")
    md += ["```", "",
           "Raw samples: `samples/*.json` (gzipped when over 1 MB; every latency in ms, in the order measured, with the "
           "parameters and the quantiles the benchmarks print); each benchmark's output: `logs/`.", ""]
    text = "\n".join(md)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    (out / "REPORT.md").write_text(text)
    print(f"wrote {out / 'REPORT.md'}")


if __name__ == "__main__":
    main()
