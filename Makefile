# Every task of the project. `make run` sets everything up and shows the main job;
# `make test` runs the whole suite (SQLite and PostgreSQL).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DB ?= sqlite:///var/benefits.db
PERIOD ?= 2025
COUNT ?= 20000
SEED ?= 7
LISTEN ?= 127.0.0.1:50051
BENCH_COUNT ?= 100000
# make load: calls in all and concurrent clients (COUNT and DB have their own defaults there)
CALLS ?= 50000
CLIENTS ?= 32
# make bench: enterprises and worker processes
N ?= 1000000
WORKERS ?= 2
# the checkpoint signing key lives outside the database; made once (`benefits audit keygen`), never replaced
LEDGER_KEY := var/ledger-key.pem
CHECKPOINTS := var/checkpoints.jsonl
AUDIT_FILES := --ledger-key $(LEDGER_KEY) --checkpoints $(CHECKPOINTS)
# auditors need only the public half
VERIFY_FILES := --public-key $(LEDGER_KEY).pub --checkpoints $(CHECKPOINTS)
# demonstration paying accounts (the bank files' debtor); see the file
PAYERS := --payers examples/payers.yaml
BATCH_POLICY ?= stable-jobs-refund
REGISTRY := var/registry-$(COUNT)-$(SEED).jsonl
PROTOS := $(wildcard proto/benefits/v1/*.proto)
GENERATED := gen/benefits/v1/__init__.py

.PHONY: install audit-verify node-deps bench-rules bench-api bench-batches bench-profile bench-columns bench-ledger bench-money bench-records bench-verify bench-snapshots bench-trace load proto run serve serve-background stop seed check check-rules format-check typecheck test test-slow test-unit test-integration test-random test-policies bench lint layers clean

install: $(VENV)/.installed $(GENERATED)  ## virtual environment with the project (editable) and its dev tools

$(VENV)/.installed: pyproject.toml proto_build.py
	@# durable-rules needs Python 3.11 or 3.12 (it does not import on 3.13)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# the build hook (proto_build.py) writes gen/benefits/v1 and maps it into the editable install
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

proto: $(GENERATED)  ## regenerate gen/benefits/v1 from proto/ (never edited by hand; see proto_build.py)

$(GENERATED): $(PROTOS) proto_build.py | $(VENV)/.installed
	$(BIN)/python proto_build.py gen

$(REGISTRY): | $(VENV)/.installed
	@# deterministic synthetic Xiangyang registry
	$(BIN)/benefits registry synth --count $(COUNT) --seed $(SEED) --out $@

var/.seeded-$(COUNT)-$(SEED): $(REGISTRY)
	@# a fresh embedded SQLite database filled with the synthetic registry (the old one's checkpoints go too)
	rm -f var/benefits.db var/benefits.db-wal var/benefits.db-shm var/.seeded-* $(CHECKPOINTS)
	$(BIN)/benefits registry load $(REGISTRY) --db $(DB)
	touch $@

seed: var/.seeded-$(COUNT)-$(SEED)  ## load the synthetic registry into $(DB)

check-rules: install  ## validate every policy file
	$(BIN)/benefits rules check rules

run: install seed check-rules  ## the main job for $(PERIOD): match, explain, serve, pay one batch
	$(BIN)/benefits evaluate-period --db $(DB) --rules rules --period $(PERIOD)
	@echo
	@echo "One enterprise, explained (benefits evaluate --uscc ... --policy ... --period $(PERIOD)):"
	@$(BIN)/python -m service.demo --db $(DB) --period $(PERIOD)
	@$(MAKE) --no-print-directory serve-background
	@echo
	@echo "One payout batch through gRPC, from empty to settled ($(BATCH_POLICY) $(PERIOD)):"
	@$(BIN)/python -m service.demo_batch --auth-file var/demo-auth.yaml --target $(LISTEN) \
	  --policy $(BATCH_POLICY) --period $(PERIOD) --out var

$(LEDGER_KEY): | $(VENV)/.installed
	$(BIN)/benefits audit keygen --out $@

serve-background: install seed stop $(LEDGER_KEY)  ## start the server in the background (var/server.pid, var/server.log)
	$(BIN)/benefits demo-auth --db $(DB) --out var/demo-auth.yaml --listen $(LISTEN) --period $(PERIOD)
	nohup $(BIN)/benefits serve --db $(DB) --rules rules --auth-file var/demo-auth.yaml \
	  --listen $(LISTEN) $(AUDIT_FILES) $(PAYERS) > var/server.log 2>&1 & echo $$! > var/server.pid
	@for i in $$(seq 1 50); do grep -q "listening on" var/server.log 2>/dev/null && break; sleep 0.2; done
	@grep "listening on" var/server.log || (cat var/server.log; exit 1)
	@echo "server pid $$(cat var/server.pid); stop it with: make stop"

serve: install seed $(LEDGER_KEY)  ## run the server in the foreground
	$(BIN)/benefits demo-auth --db $(DB) --out var/demo-auth.yaml --listen $(LISTEN) --period $(PERIOD)
	$(BIN)/benefits serve --db $(DB) --rules rules --auth-file var/demo-auth.yaml --listen $(LISTEN) $(AUDIT_FILES) $(PAYERS)

audit-verify: install  ## verify the ledger, every stored record and the newest signed checkpoint
	$(BIN)/benefits audit verify --db $(DB) $(VERIFY_FILES)

stop:  ## stop the background server
	@if [ -f var/server.pid ]; then kill $$(cat var/server.pid) 2>/dev/null || true; rm -f var/server.pid; fi

test: install node-deps  ## the whole suite but the slow tests: unit, integration, policy cases, on SQLite and PostgreSQL; results in var/test-results.xml
	$(BIN)/python -m pytest -q -m "not slow" --junitxml=var/test-results.xml

test-slow: install  ## the slow large-volume tests only (100,000 enterprises: registry load, vectorised differential)
	$(BIN)/python -m pytest -q -m slow

node-deps: tests/node/node_modules/.installed  ## the Node.js client's packages (from its lock file)

tests/node/node_modules/.installed: tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# `make test` is `make test-unit` plus `make test-integration`: the marker `integration` (every test
# below tests/integration, set by its conftest) splits the suite in two; slow tests: make test-slow.
test-unit: install  ## unit tests and policy cases: the suite but the integration and slow tests
	$(BIN)/python -m pytest -q -m "not integration and not slow"

test-integration: install node-deps  ## the integration tests: real sockets, servers, worker processes, databases
	$(BIN)/python -m pytest -q -m "integration and not slow"

# A random seed unless given, drawn once per make run (so that the seed printed is the one used).
ifndef ORDER_SEED
ORDER_SEED := $(shell od -An -N3 -tu4 /dev/urandom | tr -d ' ')
endif
test-random: install node-deps  ## the suite but the slow tests, modules and the tests in each shuffled (ORDER_SEED=, TESTS=)
	@echo "random order seed $(ORDER_SEED): make test-random ORDER_SEED=$(ORDER_SEED) repeats this order"
	$(BIN)/python -m pytest -q -m "not slow" -p randomly --randomly-seed=$(ORDER_SEED) $(TESTS)

test-policies: install  ## the test cases beside each policy
	$(BIN)/benefits rules test rules

bench: install  ## the province run: N enterprises (N=, DB=sqlite|postgresql, WORKERS=): engine alone, batches, lookups; bench/results/latest.json
	$(BIN)/python benchmarks/bench.py --n $(N) --db $(if $(findstring postgres,$(DB)),postgresql,sqlite) --workers $(WORKERS)

bench-rules: install  ## evaluation throughput against a plain-Python baseline, measured in the same run
	$(BIN)/python benchmarks/bench_rules.py

bench-trace: install  ## trace pairs/s: the interpreter vs the vectorised trace (chunks of 2,000), and the ratio
	$(BIN)/python benchmarks/bench_trace.py

bench-ledger: install  ## ledger appends/s vs plain inserts in one transaction; verification entries/s
	$(BIN)/python benchmarks/bench_ledger.py

bench-records: install  ## evaluation records/s written (100,000 in chunks of 2,000) and verified: compact vs the old fat records, SQLite and PostgreSQL
	$(BIN)/python benchmarks/bench_records.py --records 100000 --chunk 2000

bench-verify: install  ## the whole audit verification on N evaluation records (default 1,000,000) after a 10,000 baseline: records/s, queries, peak memory; SQLite and PostgreSQL
	$(BIN)/python benchmarks/bench_verify.py --n $(N)

bench-batches: install  ## a payout batch to DRAFT, enterprises/s, vs evaluation without writes
	$(BIN)/python benchmarks/bench_batches.py

bench-columns: install  ## facts of a chunk read into columns vs documents per enterprise, enterprises/s; profile
	$(BIN)/python benchmarks/bench_columns.py

bench-snapshots: install  ## facts snapshots/s of a chunk's enterprises, fact years 2025 and 2024+2025: snapshot_of(document) vs ChunkRows.snapshot, bytes compared
	$(BIN)/python benchmarks/bench_snapshots.py

bench-money: install  ## sealing the money path: DRAFT, approve, results and verification vs unsealed writes
	$(BIN)/python benchmarks/bench_money_events.py --lines 100000

bench-profile: install  ## make bench under py-spy (all processes, busy samples) into var/bench-profile.txt; split it with benchmarks/profile_tree.py
	$(BIN)/py-spy record --subprocesses --rate 40 --format raw --output var/bench-profile.txt -- \
	  $(BIN)/python benchmarks/bench.py --n $(N) --db $(if $(findstring postgres,$(DB)),postgresql,sqlite) --workers $(WORKERS)
	$(BIN)/python benchmarks/profile_tree.py var/bench-profile.txt run_partition_with --depth 2

bench-api: install  ## ExplainEligibility calls/s and p50/p99 at 1, 8, 32 clients vs a trivial RPC
	$(BIN)/python benchmarks/bench_api.py --count $(BENCH_COUNT)

# The load run's own defaults: a registry that sets up in seconds, embedded SQLite; given on the
# command line (make load COUNT=20000 DB=postgresql) they win over these.
load: COUNT = 2000
load: DB = sqlite
load: install  ## the load run: CALLS mixed calls by CLIENTS clients on loopback (COUNT=, DB=sqlite|postgresql): p50/p99 per method, zero errors, server RSS growth < 10 %, audit log VALID; bench/results/load-latest.json
	$(BIN)/python benchmarks/load_run.py --calls $(CALLS) --clients $(CLIENTS) --count $(COUNT) \
	  --db $(if $(findstring postgres,$(DB)),postgresql,sqlite)

reliability-report: install  ## docs/reliability.md from the last make test (var/test-results.xml) and make load (bench/results/load-latest-*.json)
	$(BIN)/python tools/reliability_report.py --tests var/test-results.xml $(foreach f,$(wildcard bench/results/load-latest-sqlite.json bench/results/load-latest-postgresql.json),--load $(f))

lint: install  ## buf lint over proto/ and ruff over the Python code
	$(BIN)/buf lint
	$(BIN)/ruff check .

format-check: install  ## every Python file in ruff's format (pyproject.toml [tool.ruff]); lists any it would change
	$(BIN)/ruff format --check .

typecheck: install  ## mypy --strict over the code, its tests and benchmarks (settings: pyproject.toml, [tool.mypy])
	$(BIN)/mypy

check: lint format-check typecheck  ## every static check: lint, format, types

layers:  ## who imports whom, per layer, and the import cycles (docs/architecture.md, Layers)
	$(PYTHON) tools/import_layers.py

clean:
	rm -rf var gen build dist $(VENV) *.egg-info .pytest_cache
