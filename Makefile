# The two commands of the README, plus the benchmarks. Each installs what it needs first.
.PHONY: demo test lint bench bootstrap packages vm-test fresh-root

bootstrap:
	bash scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/floor-agent demo

# ruff for style and likely bugs; mypy for types (strict on the pure cores, see pyproject.toml).
lint: bootstrap
	.venv/bin/ruff check floor_agent tests bench vmtests
	.venv/bin/mypy -p floor_agent

test: bootstrap lint
	.venv/bin/pytest -q

# The workstation on a real kernel under systemd as PID 1: a Debian 12 VM in QEMU (root; the
# image is cached in /var/cache/floor-agent-vm). Not part of `make test`: see vmtests/README.md.
vm-test: bootstrap
	.venv/bin/pytest -q -p no:cacheprovider vmtests

bench: bootstrap
	.venv/bin/python bench/collector_ingest.py
	.venv/bin/python bench/netlock.py
	.venv/bin/python bench/netlock_ruleset.py
	.venv/bin/python bench/access.py
	.venv/bin/python bench/usb_block.py
	.venv/bin/python bench/cctv.py
	.venv/bin/python bench/cctv.py --live
	.venv/bin/python bench/dashboard.py
	.venv/bin/python bench/collector_attack.py
	.venv/bin/python bench/policy.py
	.venv/bin/python bench/collector_scale.py

# One Debian package per role (and floor-agent-common) into dist/, from the committed HEAD;
# see packaging/build-debs.sh. Not part of `make test`.
packages:
	bash packaging/build-debs.sh

# The README's two commands on a Debian 12 root that never ran anything (mmdebstrap + chroot,
# a clean clone of HEAD): see scripts/fresh-root.sh. About 40 minutes; not part of CI.
fresh-root:
	bash scripts/fresh-root.sh
