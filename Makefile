# The few commands people run. `make test` is the README's test command.
.PHONY: run test lint fmt

# Until the server exists, the product is the contract check: validate the example manifest.
run:
	cargo run -q -p tessera-core -- plugin validate schemas/examples/analytics.yaml

test:
	./scripts/test

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all
