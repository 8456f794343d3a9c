# Lapse developer entry points. `make` alone prints this help.
.DEFAULT_GOAL := help
.PHONY: help up down status logs test test-unit lint typecheck proto proto-check proto-lint migration

help: ## show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

up: ## run Lapse: Kafka, PostgreSQL + demo target, every service and the demo agent
	deploy/local/lapse.sh up

down: ## stop everything `make up` started
	deploy/local/lapse.sh down

status: ## show what runs
	deploy/local/lapse.sh status

logs: ## tail the service logs
	deploy/local/lapse.sh logs

test: ## lint, type-check, and run unit + integration tests on real Kafka and PostgreSQL
	deploy/local/test.sh

test-unit: ## only the fast tests (no Kafka/PostgreSQL needed)
	uv run pytest -m "not integration"

lint: ## ruff
	uv run ruff check .

typecheck: ## mypy --strict
	uv run mypy

proto: ## regenerate Python code from proto/
	uv run python proto/generate.py

proto-check: ## fail if generated code drifted from proto/
	uv run python proto/generate.py --check

proto-lint: ## buf lint on proto/ (buf comes from the npm registry)
	npx --yes @bufbuild/buf@1.75.0 lint

migration: ## new Alembic revision for SERVICE from its models, e.g. make migration SERVICE=request MESSAGE="add x"
	uv run python -m lapse_common.new_migration $(SERVICE) "$(MESSAGE)"
