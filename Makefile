# The few commands people run. `make test` is the README's test command.
.PHONY: run serve test lint fmt

# The core on its embedded SQLite store with the template plugin registered and Ready
# (state and logs in .tessera-dev/), on http://127.0.0.1:8080. Ctrl-C stops both.
run:
	cargo run -q -p tessera-core -- dev

# The core alone (state in .tessera/).
serve:
	cargo run -q -p tessera-core -- serve

test:
	./scripts/test

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all
