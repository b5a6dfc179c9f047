# offload: guix-daemon's build hook in Go.
# `make demo` shows the main job working; `make test` runs every test. Both install what
# they need first (Debian packages, Go modules).

GO      ?= go
PREFIX  ?= /usr/local
DESTDIR ?=
BIN     := offload

# staticcheck, at a pinned version (fetched through the Go module proxy on first use).
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build deps test test-short vet demo bench chaos fuzz install clean

all: build

# SSH fixes the ssh program in the binary (sshexec.BuiltinSSH), for a daemon whose PATH
# has none: make SSH=/usr/bin/ssh. Left empty, offload looks in PATH and the usual places.
SSH ?=
LDFLAGS := $(if $(SSH),-X offload/sshexec.BuiltinSSH=$(SSH))

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) .

deps:
	sh scripts/install-deps.sh

vet:
	$(GO) vet ./...

test: deps
	@# (not `tee /dev/stderr`: reopening stderr truncates a log file it points to)
	@unformatted=$$(gofmt -l .); test -z "$$unformatted" || { echo "$$unformatted" >&2; echo "gofmt: files above need formatting" >&2; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) test -count=1 -timeout 12m ./...

demo: deps
	$(GO) run ./integration/cmd/demo

bench: deps build
	sh scripts/bench.sh

chaos: deps build
	sh scripts/chaos.sh

# Long fuzzing runs, by hand: make fuzz FUZZTIME=2m
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./storeio -run '^$$' -fuzz FuzzNarRestore -fuzztime $(FUZZTIME)
	$(GO) test ./storeio -run '^$$' -fuzz FuzzParseSexp -fuzztime $(FUZZTIME)
	$(GO) test ./machines -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)
	$(GO) test ./machines/scheme -run '^$$' -fuzz FuzzEval -fuzztime $(FUZZTIME)

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/$(BIN)

clean:
	rm -f $(BIN)
