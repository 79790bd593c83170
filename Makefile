# Two commands: `make ui` installs everything and opens the UI on the bundled model;
# `make test` installs everything (test tools and Chromium included), runs the static checks
# (`make lint`) and then the whole suite.
.PHONY: ui test test-examples lint bench

ui:
	bash scripts/install.sh
	.venv/bin/python run.py

test: lint
	.venv/bin/python -m pytest

# The static checks `make test` runs first (each configured in pyproject.toml): lint and format,
# types (mypy: engine and storage), the architecture's import contracts (import-linter) and the
# declared dependencies (deptry).
lint:
	bash scripts/install.sh --test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/python -m mypy
	.venv/bin/lint-imports
	.venv/bin/deptry .

# All 12 example tasks through the real planner (the default suite decomposes 3 of them).
test-examples:
	bash scripts/install.sh --test
	ARBOR_ALL_EXAMPLES=1 .venv/bin/python -m pytest tests/engine/planner/test_example_tasks.py

# Every script in bench/ prints its own side-by-side ratios; one at a time (they share 2 cores).
bench:
	bash scripts/install.sh --test
	.venv/bin/python -m pip install --quiet -e ".[test,bench]"
	set -e; for script in bench/*.py; do echo "== $$script"; .venv/bin/python $$script; done
