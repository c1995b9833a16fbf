# Every command of the project. `make help` lists them.

# sudo's secure_path usually lacks Go's own directory; the tests also run
# go (to build the programs they start), so it goes on the PATH too. So do
# the sbin directories, which a normal user's PATH lacks on Debian: inetd,
# ip and keepalived live there, and scripts/need looks for them on the PATH.
GO       ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export PATH := $(dir $(GO)):$(PATH):/usr/local/sbin:/usr/sbin:/sbin
PREFIX   ?= /usr/local
DESTDIR  ?=
FUZZTIME ?= 20s
UNITDIR  ?= $(PREFIX)/lib/systemd/system
# The version every binary reports (internal/buildinfo): the release tag
# it was built from, or how far past the last one (see CHANGELOG.md).
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/virtuald/virtuald/internal/buildinfo.version=$(VERSION)

# Static binaries: virtuald starts once per connection (no dynamic loader
# to pay for), and dropping privileges on every thread needs Go's
# AllThreadsSyscall, which cgo disables.
export CGO_ENABLED := 0

PROGRAMS := virtuald ipwatchd ipwatchctl
# bin/virtuald is virtuald's front (internal/enter/init/front.c, committed
# built with virtuald-init: make generate), which executes the Go program
# beside it, bin/virtuald-go, for what it does not serve itself. The front
# exists for amd64; elsewhere virtuald is the Go program itself.
GOARCH   := $(shell $(GO) env GOARCH)
FRONT    := $(if $(filter amd64,$(GOARCH)),internal/enter/init_amd64.elf,)
BINARIES := bin/virtuald bin/virtuald-go bin/ipwatchd bin/ipwatchctl

.PHONY: all build test lint race fuzz bench demo install uninstall deb docs generate clean help FORCE

all: build

build: $(BINARIES) ## build bin/virtuald, bin/ipwatchd, bin/ipwatchctl

bin/%: FORCE
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $@ ./cmd/$*

bin/virtuald-go: FORCE
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $@ ./cmd/virtuald

bin/virtuald: bin/virtuald-go FORCE
	$(if $(FRONT),install -m 0755 $(FRONT) $@,install -m 0755 bin/virtuald-go $@)

bin/whoami: FORCE
	$(GO) build -trimpath -o $@ ./internal/testbed/whoami

# need-demo, need-test, need-bench: every tool the target runs is there
# (installed, as root on Debian), or it stops at once saying which are not.
# Not .PHONY (make applies no pattern rule to a phony target: the rule
# would never run); FORCE makes it run every time all the same.
need-%: FORCE
	@scripts/need $*

test: need-test ## run every test (as root the end-to-end tests run too)
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	# The end-to-end tests of virtuald once more with the Go program as
	# virtuald, without its front (the fallback path on its own).
	VIRTUALD_TEST_FRONT=off $(GO) test -count=1 ./cmd/virtuald ./e2e

lint: ## gofmt, go vet and staticcheck (the version go.mod pins, every check: staticcheck.conf)
	@unformatted=$$(gofmt -l .); if [ -n "$$unformatted" ]; then echo "not gofmt'd:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# The race detector needs cgo. Only the test binaries are built with it:
# the programs the end-to-end tests start stay static (testbed.Build).
RACE_PACKAGES := ./internal/daemon/... ./internal/ipc/... ./internal/addrs ./cmd/ipwatchctl

race: ## the tests of the packages that run goroutines, under the race detector (needs gcc)
	CGO_ENABLED=1 $(GO) test -race -count=1 $(RACE_PACKAGES)
	CGO_ENABLED=1 $(GO) test -race -count=1 -run 'Accept|AnswerCache|FlushCounts|Decide' ./cmd/virtuald

fuzz: ## a short fuzz pass over every parser of untrusted bytes
	GO=$(GO) scripts/fuzz $(FUZZTIME) ./internal/conf FuzzParse
	GO=$(GO) scripts/fuzz $(FUZZTIME) ./internal/conf FuzzJoinedLines
	GO=$(GO) scripts/fuzz $(FUZZTIME) ./internal/elfdeps FuzzRead
	GO=$(GO) scripts/fuzz $(FUZZTIME) ./internal/relay FuzzFormat
	GO=$(GO) scripts/fuzz $(FUZZTIME) ./internal/ipc FuzzDecode
	GO=$(GO) scripts/fuzz $(FUZZTIME) ./internal/ipc FuzzRequest
	GO=$(GO) scripts/fuzz $(FUZZTIME) ./internal/ipc FuzzReply
	GO=$(GO) scripts/fuzz $(FUZZTIME) ./internal/ipc/admin FuzzAdmin
	GO=$(GO) scripts/fuzz $(FUZZTIME) ./internal/superserver FuzzInetd
	GO=$(GO) scripts/fuzz $(FUZZTIME) ./internal/superserver FuzzXinetd
	GO=$(GO) scripts/fuzz $(FUZZTIME) ./internal/superserver FuzzUnit

bench: need-bench ## run every benchmark recorded in BENCHMARKS.md (as root; builds the seed from ../shared/seed)
	$(GO) test -run '^$$' -bench . -benchmem ./internal/conf
	$(GO) test -run '^$$' -bench . ./internal/daemon ./cmd/virtuald
	$(GO) test -run '^$$' -bench BenchmarkAddToLive -benchtime 200x ./internal/addrs
	$(GO) test -run '^$$' -bench Startup -benchtime 300x ./bench
	$(GO) test -run '^$$' -bench ProcessScaling -benchtime 3x ./bench
	$(GO) test -run '^$$' -bench Start -benchtime 300x ./internal/enter
	$(GO) test -run '^$$' -bench 'Inetd$$' -benchtime 20x ./bench
	$(GO) test -run '^$$' -bench 'Isolation$$' -benchtime 20x ./bench
	$(GO) test -run '^$$' -bench InetdWedged -benchtime 10x ./bench
	$(GO) test -run '^$$' -bench Flood -benchtime 3x ./bench
	$(GO) test -run '^$$' -bench Million -benchtime 1x ./bench
	$(GO) test -run '^$$' -bench 'Reload$$' -benchtime 1x -timeout 60m ./bench
	$(GO) test -run '^$$' -bench RoundTrip -benchtime 10x ./bench
	$(GO) test -run '^$$' -bench BPFCost -benchtime 30x ./bench
	$(GO) test -run '^$$' -bench ShedRun -benchtime 5000000x -count 3 ./bpf
	$(GO) test -run '^$$' -bench ShedCost -benchtime 10x ./bench

demo: need-demo build bin/whoami ## show virtuald and ipwatchd serving several addresses through a real inetd (as root)
	$(GO) run ./demo -bin bin

install: build ## install into $(DESTDIR)$(PREFIX), and the ipwatchd unit into $(DESTDIR)$(UNITDIR)
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR)
	install -m 0755 bin/virtuald bin/virtuald-go bin/ipwatchd $(DESTDIR)$(PREFIX)/sbin/
	install -m 0755 bin/ipwatchctl $(DESTDIR)$(PREFIX)/bin/
	sed 's|@SBINDIR@|$(PREFIX)/sbin|' dist/ipwatchd.service > $(DESTDIR)$(UNITDIR)/ipwatchd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/ipwatchd.service

# The unit make install puts in /usr/local/lib/systemd/system takes
# precedence over the package's in /lib/systemd/system: remove one before
# installing the other.
uninstall: ## remove what make install put in $(DESTDIR)$(PREFIX) and $(DESTDIR)$(UNITDIR) (never the package's files)
	rm -f $(DESTDIR)$(PREFIX)/sbin/virtuald $(DESTDIR)$(PREFIX)/sbin/virtuald-go $(DESTDIR)$(PREFIX)/sbin/ipwatchd $(DESTDIR)$(PREFIX)/bin/ipwatchctl $(DESTDIR)$(UNITDIR)/ipwatchd.service

# The Debian package. Its version is VERSION made a Debian version
# (scripts/debversion); everything generated for it goes in DEBBUILD.
DEBVERSION     = $(shell scripts/debversion $(VERSION))
DEBARCH       ?= $(shell $(GO) env GOARCH)
DEBBUILD      ?= build/deb
DEBMAINTAINER ?= virtuald maintainers <virtuald@example.org>
# The commit's date, not today's, in the man pages and the changelog.
DOCDATE        = $(shell git log -1 --format=%as 2>/dev/null || date +%F)
DEBDATE        = $(shell git log -1 --format=%aD 2>/dev/null || date -R)

deb: ## $(DEBBUILD)/virtuald_VERSION_ARCH.deb: binaries, ipwatchd unit (enabled, not started), /etc/virtuald, man pages, README, examples
	rm -rf $(DEBBUILD) && mkdir -p $(DEBBUILD)/bin $(DEBBUILD)/man
	for p in $(PROGRAMS); do $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(DEBBUILD)/bin/$$p ./cmd/$$p || exit 1; done
	mv $(DEBBUILD)/bin/virtuald $(DEBBUILD)/bin/virtuald-go
	$(if $(FRONT),install -m 0755 $(FRONT),install -m 0755 $(DEBBUILD)/bin/virtuald-go) $(DEBBUILD)/bin/virtuald
	$(GO) run ./docs/mangen -o $(DEBBUILD)/man -version '$(VERSION)' -date '$(DOCDATE)' docs/*.md
	gzip -9n $(DEBBUILD)/man/*
	sed 's|@SBINDIR@|/usr/sbin|' dist/ipwatchd.service > $(DEBBUILD)/ipwatchd.service
	printf 'virtuald (%s) unstable; urgency=medium\n\n  * Built from %s.\n\n -- %s  %s\n' \
		'$(DEBVERSION)' '$(VERSION)' '$(DEBMAINTAINER)' '$(DEBDATE)' | gzip -9n > $(DEBBUILD)/changelog.gz
	gzip -9n < README.md > $(DEBBUILD)/README.md.gz
	sed -e 's|@DEBVERSION@|$(DEBVERSION)|' -e 's|@DEBARCH@|$(DEBARCH)|' -e 's|@DEBMAINTAINER@|$(DEBMAINTAINER)|' \
		-e 's|@DEBBUILD@|$(DEBBUILD)|' dist/nfpm.yaml > $(DEBBUILD)/nfpm.yaml
	$(GO) tool nfpm package -f $(DEBBUILD)/nfpm.yaml -p deb -t $(DEBBUILD)/virtuald_$(DEBVERSION)_$(DEBARCH).deb

docs: ## copy the sections of docs/*.md (the man pages' sources) into README.md again
	$(GO) run ./docs/mangen -readme README.md

generate: ## rebuild bpf/ from bpf/connacct.c and bpf/shed.c, and internal/enter's virtuald-init from init/init.c (needs: apt-get install clang llvm libbpf-dev gcc)
	$(GO) generate ./bpf ./internal/enter

clean:
	rm -rf bin build

help:
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'
