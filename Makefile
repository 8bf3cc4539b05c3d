# The two commands of the README, plus the benchmarks. Each installs what it needs first.
.PHONY: demo test lint bench bootstrap

bootstrap:
	bash scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/floor-agent demo

# ruff for style and likely bugs; mypy for types (strict on the pure cores, see pyproject.toml).
lint: bootstrap
	.venv/bin/ruff check floor_agent tests bench
	.venv/bin/mypy -p floor_agent

test: bootstrap lint
	.venv/bin/pytest -q

bench: bootstrap
	.venv/bin/python bench/collector_ingest.py
	.venv/bin/python bench/netlock.py
	.venv/bin/python bench/netlock_ruleset.py
	.venv/bin/python bench/access.py
	.venv/bin/python bench/usb_block.py
	.venv/bin/python bench/cctv.py
	.venv/bin/python bench/dashboard.py
	.venv/bin/python bench/collector_attack.py
