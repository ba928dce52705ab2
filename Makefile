# tracker: container tracker daemon (trackerd) and fleet tool (trackerctl).
# Run `make help` for the targets.

SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
PKG := github.com/coldchain/tracker
LDFLAGS := -X $(PKG)/agent/buildinfo.Version=$(VERSION) -X $(PKG)/agent/buildinfo.Commit=$(COMMIT) -X $(PKG)/agent/buildinfo.Date=$(DATE)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME ?= 10s
DEMO_DEVICES ?= 5

.DEFAULT_GOAL := help

## help: list the targets
help:
	@awk 'BEGIN{FS=": "} /^## /{sub(/^## /,""); split($$0,a,": "); printf "  %-12s %s\n", a[1], substr($$0, length(a[1])+3)}' $(MAKEFILE_LIST)

## deps: install the system packages and npm modules the tests need (idempotent)
deps:
	@./.ci/deps

## build: build trackerd and trackerctl for this machine into bin/
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/trackerd ./cmd/trackerctl

## build-arm: static trackerd and trackerctl for linux/arm (GOARM=7) and linux/arm64 into bin/
build-arm:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o bin/linux-arm/ ./cmd/trackerd ./cmd/trackerctl
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o bin/linux-arm64/ ./cmd/trackerd ./cmd/trackerctl
	@ls -l bin/linux-arm/ bin/linux-arm64/

## test: everything CI runs: lint, race tests, fuzz smoke, ARM tests under qemu
test: deps lint test-race fuzz-smoke test-arm

## test-race: all tests with the race detector
test-race:
	$(GO) test -race -count=1 -timeout 20m ./...

## test-short: the fast unit tests only (no integration tests, no race detector)
test-short:
	$(GO) test -short -count=1 ./...

## test-arm: unit tests for linux/arm and linux/arm64 under qemu-user, and trackerd version on both
test-arm: build-arm
	./.ci/test-arm

## fuzz-smoke: run every fuzz target for FUZZTIME (default 10s) each
fuzz-smoke:
	./.ci/fuzz-smoke $(FUZZTIME)

## lint: gofmt check, go vet, staticcheck
lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## bench: benchmarks with figures (PKI, buffer, NMEA, emulator, provisioning, fleet)
bench: deps
	./.ci/bench

## demo: emulator + CA + enrollment group + simulated trackers provisioning and streaming, then deprovisioning
demo: build
	./deploy/demo/demo.sh $(DEMO_DEVICES)

## clean: remove build output
clean:
	rm -rf bin/ dist/

.PHONY: help deps build build-arm test test-race test-short test-arm fuzz-smoke lint bench demo clean
