# The few commands people run. `make test` is the README's test command.
.PHONY: run serve test lint fmt

# Ports of `make run`: the core (shell and API) and the template plugin's service.
# Another pair: make run PORT=9080 PLUGIN_PORT=9001
PORT ?= 8080
PLUGIN_PORT ?= 7001

# The core on its embedded SQLite store with the template plugin registered and Ready
# (state and logs in .tessera-dev/), on http://127.0.0.1:$(PORT). Ctrl-C stops both.
run:
	cargo run -q -p tessera-core -- dev --listen 127.0.0.1:$(PORT) --plugin-port $(PLUGIN_PORT)

# The core alone (state in .tessera/).
serve:
	cargo run -q -p tessera-core -- serve

test:
	./scripts/test

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	python3 scripts/check-structure

fmt:
	cargo fmt --all
