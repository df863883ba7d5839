# Developer shortcuts. Each recipe is one plain cargo command, so `just` is optional.

# Run the whole product end to end on loopback (emulator + temporary database).
demo:
    cargo run --release -- demo

# Every test, on SQLite and then on PostgreSQL.
test:
    bash scripts/test.sh

# What CI runs: formatting, lints, tests.
ci:
    bash .ci/run

# The benchmarks, with their baselines, printed side by side.
bench:
    cargo build --release && cargo run --release -p purgeq-bench
