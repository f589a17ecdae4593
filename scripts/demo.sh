#!/usr/bin/env bash
# The main job on a fresh machine: install, then index real photos with the default model on the
# embedded PostgreSQL and search them with an edited copy of one photo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"
exec "$root/.venv/bin/simsearch" demo "$@"
