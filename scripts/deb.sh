#!/usr/bin/env bash
# Builds the Debian package: target/debian/purgeq_<version>_<arch>.deb.
#
# The release binary, then what it generates (man page, bash/zsh/fish completions) and the unit
# with ExecStart=/usr/bin/purgeq into <target dir>/release/deb/, then `cargo deb --no-build`
# (installed with `cargo install cargo-deb --locked` when missing). Extra arguments go to
# `cargo build`. Prints the path of the package as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p purgeq "$@"
target_dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="$target_dir/release/purgeq"
out="$target_dir/release/deb"
mkdir -p "$out"
"$bin" man | gzip -9n > "$out/purgeq.1.gz"
"$bin" completions bash > "$out/purgeq.bash"
"$bin" completions zsh > "$out/_purgeq"
"$bin" completions fish > "$out/purgeq.fish"
# The source-install unit, pointed at the packaged binary (its install comments do not apply).
sed -e 's|/usr/local/bin/purgeq|/usr/bin/purgeq|' \
  -e '/^# Install:$/,/^#   systemctl daemon-reload/d' deploy/purgeq.service > "$out/purgeq.service"
grep -q '^ExecStart=/usr/bin/purgeq worker$' "$out/purgeq.service"

if ! command -v cargo-deb >/dev/null; then
  echo "== cargo install cargo-deb --locked" >&2
  cargo install cargo-deb --locked
fi
cargo deb -p purgeq --no-build | tail -n 1
