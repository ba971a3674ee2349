#!/usr/bin/env bash
# Seeds the fuzz corpora (fuzz/corpus/<target>/, which `cargo fuzz run <target>` reads
# and extends) from inputs the repository already holds, so fuzzing starts from valid
# frames, files and configurations instead of from nothing:
#   frame_decoder  every golden vector of protocol/vectors/*.txt (its `hex:` line), one
#                  file each, plus all of them as one stream
#   csv_rows       examples/subscribers.csv
#   config         the documented default configuration (DEFAULT_TOML in src/config.rs)
#                  and the simulator's short one from the README
# Safe to run again: it rewrites its own seed files and leaves the rest of a corpus.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/frame_decoder corpus/csv_rows corpus/config

# The frame target reads its first byte as the receiver's payload limit: 0xFF is the
# protocol maximum, under which every golden vector decodes as the spec says.
bytes() { printf '%b' "$(sed 's/../\\x&/g' <<<"$1")"; }
stream=corpus/frame_decoder/vectors-all
printf '\xff' >"$stream"
n=0
for file in ../protocol/vectors/*.txt; do
  name=
  while IFS= read -r line; do
    case $line in
      name:*) name=${line#name: } ;;
      hex:*)
        hex=${line#hex: }
        hex=${hex// /}
        { printf '\xff'; bytes "$hex"; } >"corpus/frame_decoder/vector-${name:-$n}"
        bytes "$hex" >>"$stream"
        n=$((n + 1))
        ;;
    esac
  done <"$file"
done

cp ../examples/subscribers.csv corpus/csv_rows/example.csv

awk '/^pub const DEFAULT_TOML: &str = r#"/ { on = 1; sub(/.*r#"/, ""); }
     on && /^"#;/ { exit }
     on { print }' ../src/config.rs >corpus/config/default.toml
printf '[link]\nlisten = "127.0.0.1:7300"\n[database]\ndata_dir = "sim-data"\n' >corpus/config/sim.toml

echo "seeded: $n frames, 1 CSV file, 2 configurations (fuzz/corpus/)"
