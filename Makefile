# lead-relay: the two commands a new machine needs are `make demo` and `make test`.
SWIFT ?= swift
SECONDS ?= 300
# Every swift command runs through this: it drops SwiftPM's warning about unhandled files in a dependency's
# checkout, printed at every build, and passes everything else (see the script). The ~900 warnings a build used
# to print came from the OpenAPI generator's `public import`s, removed at the source by `accessModifier:
# internal` in the two openapi-generator-config.yaml files.
QUIET := ./scripts/swift-quiet

.PHONY: deps test-deps build release test demo lint format fuzz bench clean

# What the build links against; the test tools (promtool, kcat, PostgreSQL, pytest, hadolint, checkov) only for
# `make test`, so that `make demo` installs nothing it does not use.
deps:
	@./scripts/install-deps.sh build

test-deps:
	@./scripts/install-deps.sh test

build: deps
	$(QUIET) $(SWIFT) build

release: deps
	$(QUIET) $(SWIFT) build -c release

test: test-deps
	$(QUIET) $(SWIFT) build --build-tests
	SWIFT=$(SWIFT) ./scripts/run-swift-tests
	python3 -m pytest -q -p no:cacheprovider deploy/tests

demo: deps
	$(QUIET) $(SWIFT) build --product lead-relay
	./.build/debug/lead-relay demo

lint:
	$(SWIFT) format lint --strict --recursive Package.swift Sources Tests Benchmarks Fuzz

format:
	$(SWIFT) format --in-place --recursive Package.swift Sources Tests Benchmarks Fuzz

# libFuzzer on event decoding + validation, seeded with the fixture corpus; its own scratch path because
# LeadEvents is instrumented there (see the end of Package.swift). Crashes are written to fuzz-corpus/ as crash-*.
fuzz: deps
	LEAD_RELAY_FUZZ=1 $(QUIET) $(SWIFT) build --scratch-path .build-fuzz --product lead-events-fuzz
	python3 Tests/LeadEventsTests/make_fixtures.py --fuzz-seeds fuzz-corpus/seeds
	./.build-fuzz/debug/lead-events-fuzz fuzz-corpus/seeds -max_total_time=$(SECONDS) -max_len=8192 \
		-artifact_prefix=fuzz-corpus/ -print_final_stats=1

# Release builds of the relay, the simulator and the two benchmarks (LEAD_RELAY_BENCH adds the latter to the
# package; the other modules' builds are shared), then the scenarios of issues 7 and 12: writes BENCHMARKS.md and
# bench-results.json. BENCH_QUICK=1 runs smaller backlogs once; BENCH_REPEATS=N and BENCH_ONLY=1,3,... also apply.
# Its deps add the PostgreSQL server of the scenarios with a shared database (1 + PostgreSQL, 7).
bench:
	@./scripts/install-deps.sh bench
	LEAD_RELAY_BENCH=1 $(QUIET) $(SWIFT) build -c release --product lead-relay
	LEAD_RELAY_BENCH=1 $(QUIET) $(SWIFT) build -c release --product seeker-leads-sim
	LEAD_RELAY_BENCH=1 $(QUIET) $(SWIFT) build -c release --product lead-events-bench
	LEAD_RELAY_BENCH=1 $(QUIET) $(SWIFT) build -c release --product lead-relay-bench
	./.build/release/lead-relay-bench

clean:
	rm -rf .build .build-*
