#!/usr/bin/env python3
"""Where a process's time goes, from `perf script -F comm,tid,ip,sym,dso`.

Each sample is charged to the function it was in (self time), grouped into
categories (gRPC, protobuf, JSON, libcurl, malloc, locks, policy, ...);
samples in the kernel are charged to the system call they came through
(the first user-space frame: sendmsg, poll, futex...). Threads are grouped
by role: the one running libcurl is the backend's event loop, gRPC's own
threads are named by gRPC, the rest are "other".

    perf record -g -p PID -o perf.data -- sleep 5
    perf script -i perf.data -F comm,tid,ip,sym,dso | bench/perf_categories.py
"""
import collections
import re
import sys

# (category, pattern on "symbol dso"), first match wins.
CATEGORIES = [
    ("libcurl", r"libcurl"),
    ("absl Mutex (deadlock detection: GraphCycles)", r"GraphCycles|graphcycles"),
    ("absl Mutex", r"libabsl_synchronization|absl::\S*Mutex|CondVar|SpinLock"),
    ("gRPC", r"libgrpc|libgpr|libupb|libaddress_sorting|libcares|grpc_|grpc::"),
    ("protobuf", r"libprotobuf|google::protobuf|arbiter::v1::"),
    ("JSON (nlohmann, common/json)", r"nlohmann|arbiter::json"),
    ("malloc/free", r"malloc|[^a-z]free|_int_|consolidate|unlink_chunk|calloc|"
     r"realloc|tcache|operator new|operator delete|arena|cfree"),
    ("prometheus", r"prometheus"),
    ("policy (stats, latency sketch, decision log)",
     r"arbiter::policy|_Rb_tree<int, std::pair<int const, long>"),
    ("arbiter (other)", r"arbiter::|\(/\S*/arbiter\)"),
    ("libc string/memory", r"^(__)?(mem|str)\S* .*libc\.so"),
    ("libc (other), vdso", r"libc\.so|ld-linux|vdso"),
    ("OpenSSL (request ids' HMAC-SHA-256)", r"libssl|libcrypto"),
    ("abseil (other)", r"libabsl"),
    ("libstdc++", r"libstdc\+\+"),
]


def category(symbol, dso):
    text = f"{symbol} ({dso})"
    for name, pattern in CATEGORIES:
        if re.search(pattern, text):
            return name
    return "other: " + dso.rsplit("/", 1)[-1]


def read_samples(lines):
    """Yields (comm, tid, [(symbol, dso), ...] leaf first)."""
    header = None
    frames = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if header:
                yield header[0], header[1], frames
            header, frames = None, []
            continue
        if not line[0].isspace():
            if header:
                yield header[0], header[1], frames
            parts = line.split()
            header, frames = (" ".join(parts[:-1]) or "?", parts[-1]), []
            continue
        match = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)$", line)
        if match and header:
            frames.append((match.group(1), match.group(2)))
    if header:
        yield header[0], header[1], frames


def main():
    samples = [s for s in read_samples(sys.stdin) if s[2]]
    if not samples:
        print("no samples")
        return
    # The thread that runs libcurl most is the backend's event loop.
    curl_tids = collections.Counter(
        tid for _, tid, frames in samples
        if any("libcurl" in dso for _, dso in frames))
    grpc_names = re.compile(r"nexting|event_engine|default-exec|grpc|"
                            r"timer_manager|resolver")

    loop_tid = curl_tids.most_common(1)[0][0] if curl_tids else None

    def role(comm, tid):
        if tid == loop_tid:
            return "backend event loop (libcurl thread)"
        if grpc_names.search(comm):
            return "gRPC threads"
        return "other threads"

    by_role = collections.defaultdict(collections.Counter)
    overall = collections.Counter()
    for comm, tid, frames in samples:
        symbol, dso = frames[0]
        if "kernel" in dso:
            caller = next((s for s, d in frames
                           if "kernel" not in d and s != "[unknown]"), "?")
            name = "kernel, via " + re.sub(r"@.*|^__(libc_)?|^GI___(libc_)?",
                                           "", caller)
            if name.endswith(" syscall"):
                name += " (futex: wake-ups and waits)"
        else:
            name = category(symbol, dso)
        by_role[role(comm, tid)][name] += 1
        overall["kernel" if "kernel" in dso else name] += 1
    total = len(samples)
    print(f"{total} samples; share of all samples of the process")
    for r in sorted(by_role, key=lambda r: -sum(by_role[r].values())):
        n = sum(by_role[r].values())
        print(f"  {r}: {100 * n / total:.1f}%")
        for name, count in by_role[r].most_common(12):
            if 100 * count / total >= 0.5:
                print(f"    {100 * count / total:5.1f}%  {name}")
    print("  all threads:")
    for name, count in overall.most_common(14):
        print(f"    {100 * count / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
