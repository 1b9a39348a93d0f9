#!/bin/sh
# Runs one fuzz target for a while, then minimises its corpus.
#
#   tests/fuzz/run.sh TARGET SECONDS        (from anywhere; e.g. under nice -n 19)
#
# The corpus lives in tests/fuzz/corpus/TARGET (committed, kept small by
# `cargo fuzz cmin`). An empty corpus is seeded from the golden data:
# tests/data/metainfo/*.info for `metainfo`, tests/data/krpc/*.bin for
# `bencode` and `krpc`; `peer_wire` builds its own handshakes and starts
# empty, as do `mse` and `utp` (which lays fuzz bytes over valid headers).
# tests/fuzz/dicts/TARGET.dict is passed to libFuzzer when present.
# A crash leaves its input in tests/fuzz/artifacts/TARGET/ and the script
# exits non-zero without minimising: make the input a regression test.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); RUSTC_BOOTSTRAP=1 lets it
# pass its -Z flags to the stable compiler.
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 TARGET SECONDS" >&2
    exit 2
fi
target=$1
seconds=$2
case $seconds in
    ''|*[!0-9]*) echo "SECONDS must be a whole number" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
fuzz=$root/tests/fuzz
corpus=$fuzz/corpus/$target
mkdir -p "$corpus"

if [ -z "$(ls -A "$corpus")" ]; then
    case $target in
        metainfo) seeds=tests/data/metainfo/*.info ;;
        bencode | krpc) seeds=tests/data/krpc/*.bin ;;
        *) seeds= ;;
    esac
    for f in $seeds; do
        [ -f "$f" ] && cp "$f" "$corpus/"
    done
    echo "seeded $corpus with $(ls "$corpus" | wc -l) inputs"
fi

set -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048
if [ -f "$fuzz/dicts/$target.dict" ]; then
    set -- "$@" -dict="$fuzz/dicts/$target.dict"
fi

export RUSTC_BOOTSTRAP=1
# Sanitizer builds go to tests/fuzz/target, never to a shared target dir.
unset CARGO_TARGET_DIR
# Runs' new inputs go to a scratch directory; cmin merges them with the
# committed corpus, keeping only inputs that add coverage.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cargo fuzz run --fuzz-dir "$fuzz" "$target" "$scratch" "$corpus" -- "$@"
cp "$scratch"/* "$corpus"/ 2>/dev/null || true
cargo fuzz cmin --fuzz-dir "$fuzz" "$target" "$corpus"
echo "corpus: $(ls "$corpus" | wc -l) inputs, $(du -sh "$corpus" | cut -f1)"
