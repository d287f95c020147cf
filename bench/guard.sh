#!/usr/bin/env bash
# Regression guard for the per-request costs removed in the perf work
# (docs/benchmarks.md): runs bench/profile.sh on the small-files workload
# under strace and fails if a FUSE request again costs system calls it
# should not: sched_yield (a spinning pool), ioprio_get / getpriority (I/O
# contexts not cached), getpid (a pid check per submission), futex beyond
# GUARD_MAX_FUTEX per request, or more than GUARD_MAX_SWITCHES context
# switches per request (a hand-off between threads). Counts, not speed,
# so it holds on a loaded machine.
# Same environment as profile.sh (KEELFS_BIN, WORK, NFILES default 1000).
set -euo pipefail
here=$(dirname "$0")
export NFILES=${NFILES:-1000}
MAX_FUTEX=${GUARD_MAX_FUTEX:-1.0}
MAX_SWITCHES=${GUARD_MAX_SWITCHES:-2.0}
# Context switches without strace (its stops would add their own).
plain=$(bash "$here/profile.sh" files none 2>/dev/null | tail -1)
out=$(bash "$here/profile.sh" files strace 2>/dev/null)
echo "$plain"
echo "$out" | tail -1
python3 - "$MAX_FUTEX" "$MAX_SWITCHES" <<PY
import re, sys
out = """$out"""
plain = """$plain"""
max_futex, max_switches = float(sys.argv[1]), float(sys.argv[2])
per = dict((k, float(v)) for k, v in re.findall(r"(\w+) ([0-9.]+)", out.splitlines()[-1].split(":", 1)[1]))
switches = float(re.search(r"([0-9.]+) context switches/request", plain).group(1))
bad = [f"{s} {per[s]:.2f}/request" for s in ("sched_yield", "ioprio_get", "getpriority", "getpid") if per.get(s, 0) > 0.05]
if per.get("futex", 0) > max_futex:
    bad.append(f"futex {per['futex']:.2f}/request (max {max_futex})")
if switches > max_switches:
    bad.append(f"{switches:.2f} context switches/request (max {max_switches})")
if bad:
    sys.exit("guard FAILED: " + "; ".join(bad))
print("guard ok")
PY
