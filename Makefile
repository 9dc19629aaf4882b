# lead-relay: the two commands a new machine needs are `make demo` and `make test`.
SWIFT ?= swift
SECONDS ?= 300

.PHONY: deps build release test demo lint format fuzz bench clean

deps:
	@./scripts/install-deps.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	python3 -m pytest -q -p no:cacheprovider deploy/tests

demo: deps
	$(SWIFT) build --product lead-relay
	./.build/debug/lead-relay demo

lint:
	$(SWIFT) format lint --strict --recursive Package.swift Sources Tests

format:
	$(SWIFT) format --in-place --recursive Package.swift Sources Tests

clean:
	rm -rf .build .build-*
