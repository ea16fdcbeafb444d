# msglab: the README's two commands are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
MSGLAB := $(VENV)/bin/msglab
STAMP := $(VENV)/.msglab-installed

.PHONY: demo test lint unit dev clean browser

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# the compose specification's JSON schema ships in this wheel; its pinned deps are not needed
	$(PY) -m pip install -q --no-deps docker-compose==1.29.2
	touch $(STAMP)

dev: $(STAMP)

demo: $(STAMP)
	$(MSGLAB) infra up
	$(MSGLAB) infra status
	$(MSGLAB) compare --quick --out runs/compare

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# the report tests look at report.html in a real headless browser (Debian's chromium)
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium for the report tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium >/dev/null; \
	  else \
	    echo "make test needs chromium: sudo apt-get install chromium" >&2; exit 1; \
	  fi; }

test: lint browser
	$(PY) -m pytest --durations=25

clean:
	rm -rf $(VENV) build src/*.egg-info
