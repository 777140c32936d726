#!/usr/bin/env bash
# The default reproduction: set up, then run the Snakemake pipeline on config/config.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/snakemake --cores all --configfile config/config.yaml "$@"
