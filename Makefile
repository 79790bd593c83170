# Two commands: `make ui` installs everything and opens the UI on the bundled model;
# `make test` installs everything (test tools and Chromium included) and runs the whole suite.
.PHONY: ui test lint bench

ui:
	bash scripts/install.sh
	.venv/bin/python run.py

test:
	bash scripts/install.sh --test
	.venv/bin/ruff check .
	.venv/bin/python -m pytest

bench:
	bash scripts/install.sh --test
	.venv/bin/python bench/tokens_per_s.py
