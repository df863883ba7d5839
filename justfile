# Developer shortcuts. Each recipe is one plain cargo command, so `just` is optional.

# Run the whole product end to end on loopback (emulator + temporary database).
demo:
    cargo run --release -- demo

# Every test: unit, integration, process and crash tests.
test:
    cargo test

# What CI runs: formatting, lints, tests.
ci:
    bash .ci/run

# The benchmarks, with their baselines, printed side by side.
bench:
    cargo run --release --bin purgeq-bench
