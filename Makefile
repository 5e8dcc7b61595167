# The edge modules: build, test, demo and benchmarks.
#
#   make                 build the four .so files into build/modules/
#   make test            install what is missing, build, run t/ with fixtures
#   make test-valgrind   the same, nginx under valgrind memcheck
#   make run             demo: redis, a backend and nginx on 127.0.0.1:8080
#   make bench           wrk benchmarks on loopback, ratios against proxy_pass
#   make deb             Debian packages, one per module, into build/deb/
#   make test-deb        install them, enable a module, nginx -t, a request
#                        through it, purge them (as root; leaves no trace)
#
# NGINX=/path/to/sbin/nginx names the nginx the modules are built for, tested
# with and benchmarked against (default: Debian's /usr/sbin/nginx); its
# `nginx -V` gives the configure flags.  NGINX_SRC=/path/to/nginx-x.y.z is a
# source tree of the same version (default: Debian's nginx-dev tree).  A
# binary with the modules compiled in (--add-module) needs no build.

NGINX     ?= /usr/sbin/nginx
NGINX_SRC ?= /usr/share/nginx/src
PROVE     ?= prove
T         ?= t/

export NGINX NGINX_SRC

.PHONY: all modules deps-build deps-test deps-bench test test-valgrind \
        run bench deb test-deb clean

all: modules

modules: deps-build
	@scripts/build.sh

deps-build:
	@scripts/install-deps.sh build

deps-test:
	@scripts/install-deps.sh test

deps-bench:
	@scripts/install-deps.sh bench

test: deps-test modules
	@t/fixtures.sh $(PROVE) --exec t/perl-append-inc -r $(T)

test-valgrind: deps-test modules
	@TEST_NGINX_USE_VALGRIND=1 t/fixtures.sh \
	    $(PROVE) --exec t/perl-append-inc -r $(T)

run: deps-test modules
	@scripts/run-demo.sh

bench: deps-bench modules
	@bench/run.sh

deb:
	@scripts/install-deps.sh deb
	@scripts/deb.sh

test-deb: deb
	@scripts/test-deb.sh

clean:
	rm -rf build t/servroot
