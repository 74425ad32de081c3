#!/usr/bin/env bash
# Install or upgrade idb-stats as a systemd service; safe to re-run.
#
#   deploy/install.sh [--prefix /opt/idb-stats] [--wheel FILE] [--extras opensearch]
#                     [--user idb-stats] [--root DIR] [--dry-run] [--uninstall]
#
# --root DIR installs into a staging tree (no account is created, systemctl is not called);
# --dry-run prints every action without doing it.
set -euo pipefail

prefix=/opt/idb-stats
user=idb-stats
root=""
wheel=""
extras=""
dry_run=0
uninstall=0
checkout=$(cd "$(dirname "$0")/.." && pwd)

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    --root) root=$(realpath -m "$2"); shift 2 ;;
    --wheel) wheel=$(realpath "$2"); shift 2 ;;
    --extras) extras=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

etc="$root/etc/idb-stats"
units="$root/etc/systemd/system"
venv="$root$prefix/venv"
timers="idb-stats-collect.timer idb-stats-api.timer idb-stats-verify.timer"

run() {
  echo "+ $*"
  [ "$dry_run" = 1 ] || "$@"
}

systemd_running() { [ -z "$root" ] && [ -d /run/systemd/system ]; }

if [ "$uninstall" = 1 ]; then
  if systemd_running; then run systemctl disable --now $timers || true; fi
  for unit in "$checkout"/systemd/*; do run rm -f "$units/$(basename "$unit")"; done
  if systemd_running; then run systemctl daemon-reload; fi
  run rm -rf "$root$prefix"
  echo "kept: $etc (configuration, credentials), /var/lib/idb-stats (state) and the $user account"
  exit 0
fi

# 1. The service account: no login, no home outside its state directory.
if [ -n "$root" ]; then
  echo "staging root: account $user not created (accounts belong to the target system)"
elif id "$user" >/dev/null 2>&1; then
  echo "account $user exists"
else
  run useradd --system --user-group --home-dir /var/lib/idb-stats --no-create-home --shell /usr/sbin/nologin "$user"
fi
group_of_user() { [ -n "$root" ] || [ "$dry_run" = 1 ] && echo root || echo "$user"; }
group=$(group_of_user)

# 2. The virtualenv and the package (from a wheel, else this checkout); an upgrade reinstalls.
run mkdir -p "$root$prefix"
[ -x "$venv/bin/python" ] || run python3 -m venv "$venv"
target=${wheel:-$checkout}
[ -n "$extras" ] && target="$target[$extras]"
run "$venv/bin/pip" install -q --upgrade "$target"
run mkdir -p "$root$prefix/share/docs"
run cp "$checkout/README.md" "$checkout/docs/operations.md" "$root$prefix/share/docs/"

# 3. Configuration: an example config if none, readable by the service group only.
run mkdir -p "$etc/credentials"
if [ -e "$etc/config.toml" ]; then
  echo "kept existing $etc/config.toml"
else
  run install -m 0640 -g "$group" "$checkout/deploy/config.example.toml" "$etc/config.toml"
fi
run chmod 0750 "$etc/credentials"
run chgrp "$group" "$etc/credentials"
# Every credential the units load must exist; an empty file means "not used".
for name in source-dsn store-api-key store-password api-dsn; do
  [ -e "$etc/credentials/$name" ] || run install -m 0600 /dev/null "$etc/credentials/$name"
done

# 4. The units, pointing at this prefix.
run mkdir -p "$units"
for unit in "$checkout"/systemd/*; do
  if [ "$dry_run" = 1 ]; then
    echo "+ install $unit -> $units/$(basename "$unit") (prefix $prefix)"
  else
    sed "s|/opt/idb-stats|$prefix|g" "$unit" > "$units/$(basename "$unit").tmp"
    chmod 0644 "$units/$(basename "$unit").tmp"
    mv "$units/$(basename "$unit").tmp" "$units/$(basename "$unit")"
  fi
done

# 5. Enable the timers.
if systemd_running; then
  run systemctl daemon-reload
  run systemctl enable --now $timers
else
  echo "systemd is not running here (or --root): timers not enabled; on the target run: systemctl enable --now $timers"
fi
echo "installed idb-stats in $root$prefix"
