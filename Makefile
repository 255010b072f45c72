# Meridian build, test and demo. Everything a target needs it installs itself.
GO          ?= go
BIN         ?= bin/meridian
GOBIN       := $(CURDIR)/.tools/bin
export PATH := $(GOBIN):$(PATH)

PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
STATICCHECK_VERSION        := v0.8.2
PROTOS := api/kv/v1/kv.proto api/internalapi/v1/internal.proto api/admin/v1/admin.proto

.PHONY: all build test check vet lint race demo proto tools clean bench

all: build

build:
	$(GO) build -o $(BIN) ./cmd/meridian

## test: the whole test suite, as CI runs it (race detector on).
test:
	$(GO) test -race -count=1 -timeout 14m ./...

vet:
	$(GO) vet ./...

lint: $(GOBIN)/staticcheck
	$(GOBIN)/staticcheck ./...

## check: vet, race tests and lint — run before every push.
check: vet test lint
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)

## demo: build and run the multi-datacenter walk-through on a local cluster.
demo: build
	./$(BIN) demo

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./...

## proto: regenerate the committed Go code from api/**/*.proto.
proto: $(GOBIN)/protoc-gen-go $(GOBIN)/protoc-gen-go-grpc
	@command -v protoc >/dev/null || { echo "installing protoc (protobuf-compiler)"; apt-get update -qq && apt-get install -y -qq protobuf-compiler; }
	cd api && protoc -I . \
	  --go_out=. --go_opt=paths=source_relative \
	  --go-grpc_out=. --go-grpc_opt=paths=source_relative \
	  $(patsubst api/%,%,$(wildcard $(PROTOS)))

$(GOBIN)/protoc-gen-go:
	GOBIN=$(GOBIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(GOBIN)/protoc-gen-go-grpc:
	GOBIN=$(GOBIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

$(GOBIN)/staticcheck:
	GOBIN=$(GOBIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

clean:
	rm -rf bin .tools
