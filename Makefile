# Flint developer commands. Every target creates the virtualenv first, from this
# project's own files, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CHROMIUM := /usr/bin/chromium
REDIS := /usr/bin/redis-server
WRK := /usr/bin/wrk
PROTO_FILES := $(shell find proto -name '*.proto' | sort)

.PHONY: run test test-sqlite test-postgresql lint gen gen-check breaking bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/flint up

# Flint, a seeded test merchant and the sample plugin (examples/thankyou_plugin),
# ready to install: see README, "Build your first plugin".
.PHONY: dev
dev: $(STAMP)
	$(BIN)/flint dev

# The whole suite on both databases, both at once: each run creates its own fresh
# database and picks its own free ports. Each run's output is printed whole when
# it ends (`make test-sqlite` / `make test-postgresql` run one, streaming).
test: $(STAMP) $(CHROMIUM) $(REDIS) $(WRK)
	$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgresql

test-sqlite: $(STAMP) $(CHROMIUM) $(REDIS) $(WRK)
	FLINT_TEST_DATABASE=sqlite $(BIN)/pytest $(PYTEST_ARGS)

test-postgresql: $(STAMP) $(CHROMIUM) $(REDIS) $(WRK)
	FLINT_TEST_DATABASE=postgresql $(BIN)/pytest $(PYTEST_ARGS)

# Several gRPC replicas share their rate limits through Redis (Debian's package;
# `flint up --replicas N` starts a private one).
$(REDIS):
	@command -v apt-get >/dev/null || { echo "install redis-server at $(REDIS)" >&2; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server

# Browser tests drive Debian's Chromium through Playwright (no browser download).
$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "install Chromium at $(CHROMIUM)" >&2; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Benchmarks (bench/RESULTS.md): every scenario against its baseline, in one run.
# BENCH_QUICK=1 makes a smoke run of a few seconds per scenario.
bench: $(STAMP) $(WRK) $(REDIS)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Soak (not in CI): `flint up --replicas 2 --workers 2` on PostgreSQL under moderate
# load for SOAK_SECONDS (default 600); fails on any error, growth or count mismatch.
.PHONY: soak
soak: $(STAMP)
	$(BIN)/python -m bench.soak

# REST load comes from wrk (Debian's package).
$(WRK):
	@command -v apt-get >/dev/null || { echo "install wrk at $(WRK)" >&2; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk

lint: $(STAMP) build/protodeps
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy
	$(BIN)/buf lint

# google/api protos come from the installed googleapis-common-protos wheel and
# google/protobuf from grpcio-tools; nothing of theirs is committed.
GOOGLEAPIS = $(shell $(BIN)/python -c 'import google.api, os; print(os.path.dirname(os.path.dirname(google.api.__path__[0])))')
PROTOBUF_INCLUDE = $(shell $(BIN)/python -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')

build/protodeps: $(STAMP)
	rm -rf $@ && mkdir -p $@/google/api $@/google/rpc
	cp $(GOOGLEAPIS)/google/api/annotations.proto $(GOOGLEAPIS)/google/api/http.proto \
	   $(GOOGLEAPIS)/google/api/field_behavior.proto $@/google/api/

# Writes Python code, .pyi stubs and the descriptor set (for Envoy) into $(OUT).
OUT ?= gen
gen: $(STAMP)
	rm -rf $(OUT) && mkdir -p $(OUT)/flint
	PATH=$(BIN):$$PATH $(BIN)/python -m grpc_tools.protoc -Iproto -I$(GOOGLEAPIS) -I$(PROTOBUF_INCLUDE) \
	  --python_out=$(OUT) --grpc_python_out=$(OUT) --mypy_out=quiet:$(OUT) --mypy_grpc_out=quiet:$(OUT) \
	  $(PROTO_FILES)
	$(BIN)/python -m grpc_tools.protoc -Iproto -I$(GOOGLEAPIS) -I$(PROTOBUF_INCLUDE) \
	  --include_imports --descriptor_set_out=$(OUT)/flint/descriptor_set.binpb \
	  $(PROTO_FILES) google/rpc/error_details.proto google/rpc/status.proto

# Fails when gen/ does not match what `make gen` writes from proto/.
gen-check: $(STAMP)
	rm -rf build/gen-check
	$(MAKE) --no-print-directory gen OUT=build/gen-check
	diff -r gen build/gen-check || (echo "gen/ is stale: run 'make gen' and commit" >&2; exit 1)

# Guards released contracts: the protos must stay compatible with main's. Both
# sides are compiled to images with the same protoc, so no network is needed.
BREAKING_AGAINST ?= main
image = $(BIN)/python -m grpc_tools.protoc -I$(1) -I$(GOOGLEAPIS) -I$(PROTOBUF_INCLUDE) \
	  --include_imports --include_source_info --descriptor_set_out=$(2) \
	  $$(cd $(1) && find . -name '*.proto' | sed 's|^\./||' | sort)
breaking: $(STAMP)
	rm -rf build/against && mkdir -p build/against
	git archive $(BREAKING_AGAINST) proto | tar -x -C build/against
	$(call image,build/against/proto,build/against/image.binpb)
	$(call image,proto,build/current.binpb)
	$(BIN)/buf breaking build/current.binpb --against build/against/image.binpb --exclude-imports

clean:
	rm -rf build dist $(VENV) flint.db flint.db-*
