# The few commands people run. `make test` is the README's test command.
.PHONY: run test lint fmt

# The core on its embedded SQLite store (state in .tessera/), on http://127.0.0.1:8080.
run:
	cargo run -q -p tessera-core -- serve

test:
	./scripts/test

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all
