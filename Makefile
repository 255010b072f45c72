# Meridian build, test and demo. Everything a target needs it installs itself.
GO          ?= go
BIN         ?= bin/meridian
GOBIN       := $(CURDIR)/.tools/bin
export PATH := $(GOBIN):$(PATH)

PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
STATICCHECK_VERSION        := v0.8.2
PROTOS := api/kv/v1/kv.proto api/internalapi/v1/internal.proto api/admin/v1/admin.proto

.PHONY: all build test check vet lint race demo drill proto tools clean bench large-files

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

## check: no large non-source files, vet, race tests and lint — run before every push.
check: large-files vet test lint
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)

# Source and docs may be large; anything else over 1 MB tracked by git is
# almost always a build output, profile or data file committed by mistake.
LARGE_FILE_BYTES := 1048576
SOURCE_EXT       := go|proto|md|mod|sum|s|c|h|sh

## large-files: fail, naming them, on tracked files over 1 MB that are not source.
large-files:
	@big=$$(git -c core.quotePath=false ls-files | while IFS= read -r f; do \
	  [ -f "$$f" ] || continue; \
	  case "$$f" in *.*) ext="$${f##*.}";; *) ext=;; esac; \
	  if echo "$$ext" | grep -Eqx '$(SOURCE_EXT)'; then continue; fi; \
	  [ "$$(wc -c < "$$f")" -gt $(LARGE_FILE_BYTES) ] && echo "  $$f ($$(wc -c < "$$f") bytes)"; \
	done; true); \
	if [ -n "$$big" ]; then \
	  echo "tracked files over 1 MB that are not source (remove with git rm --cached FILE, and ignore build outputs in .gitignore):"; \
	  echo "$$big"; exit 1; \
	fi

## demo: build and run the multi-datacenter walk-through on a local cluster.
demo: build
	./$(BIN) demo

## drill: a 3-DC dc-outage failover drill on a local cluster of real processes (about three minutes); reports in bin/drill.json and bin/drill.html.
drill: build
	./$(BIN) drill dc-outage --local --dcs 3 --baseline 40s --hold 100s --json bin/drill.json --html bin/drill.html

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
