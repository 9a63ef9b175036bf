#!/usr/bin/env bash
# Record a real program's loads and stores with `memtrace record` (PyPI memtrace, which
# bundles Valgrind) and ingest them as a canonical one-VM trace.
# usage: capture-memtrace.sh MEMTRACE BALLOONREPLAY SCRATCH OUTPUT VM_MEM LRU_PAGES STDIN PROGRAM [ARGS...]
# memtrace always writes ./memtrace.out, so it runs in its own scratch directory, which is
# removed afterwards (a raw capture is hundreds of MiB; the filtered trace is small).
set -euo pipefail
memtrace=$1 balloonreplay=$2 scratch=$3 output=$4 vm_mem=$5 lru_pages=$6 stdin=$7
shift 7
program=$1
if [ ! -x "$program" ]; then
    echo "error: cannot capture: program $program not found or not executable" \
        "(install it, e.g. apt-get install sqlite3, or point workloads.*.capture.program at it)" >&2
    exit 1
fi
if ! command -v "$memtrace" >/dev/null 2>&1; then
    echo "error: cannot capture: $memtrace not found (pip install memtrace==0.2.6)" >&2
    exit 1
fi
output=$(realpath -m "$output")
[ "$stdin" = "-" ] || stdin=$(realpath "$stdin")
rm -rf "$scratch" && mkdir -p "$scratch"
trap 'rm -rf "$scratch"' EXIT
started=$(date +%s.%N)
(
    cd "$scratch"
    if [ "$stdin" = "-" ]; then
        "$memtrace" record --pc-range=0-0xffffffffffffffff:m "$@" </dev/null >program.out
    else
        "$memtrace" record --pc-range=0-0xffffffffffffffff:m "$@" <"$stdin" >program.out
    fi
)
recorded=$(date +%s.%N)
raw_bytes=$(stat -c %s "$scratch/memtrace.out")
echo "captured: $* -> $raw_bytes bytes of memtrace.out in" \
    "$(awk "BEGIN {print $recorded - $started}") s" >&2
filter=()
[ "$lru_pages" = "0" ] || filter=(--lru-filter "$lru_pages")
"$balloonreplay" ingest "$scratch/memtrace.out" -f memtrace "${filter[@]}" --vm-mem "$vm_mem" \
    -o "$output" --quiet
echo "ingested in $(awk "BEGIN {print $(date +%s.%N) - $recorded}") s: $(stat -c %s "$output") bytes" >&2
