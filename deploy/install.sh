#!/usr/bin/env bash
# Install or upgrade idb-stats as a systemd service; safe to re-run.
#
#   deploy/install.sh [--prefix /opt/idb-stats] [--wheel FILE] [--extras opensearch]
#                     [--user idb-stats] [--root DIR] [--enable] [--dry-run] [--uninstall]
#
# The timers are enabled only once `check-config --connect` passes as the service (run it again
# after writing the credentials), the api timer only when an ingest DSN is configured;
# --enable enables them without the check. --root DIR installs into a staging tree to be copied
# to DIR's place on the target (no account, no systemctl; the virtualenv's scripts already name
# PREFIX, not DIR). --dry-run prints what would be done and does nothing.
set -euo pipefail

prefix=/opt/idb-stats
user=idb-stats
root=""
wheel=""
extras=""
dry_run=0
uninstall=0
enable=0
checkout=$(cd "$(dirname "$0")/.." && pwd)

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    --root) root=$(realpath -m "$2"); shift 2 ;;
    --wheel) wheel=$(realpath "$2"); shift 2 ;;
    --extras) extras=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --enable) enable=1; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

etc="$root/etc/idb-stats"
units="$root/etc/systemd/system"
venv="$root$prefix/venv"
timers="idb-stats-collect.timer idb-stats-api.timer idb-stats-verify.timer idb-stats-monthly.timer"

run() {
  if [ "$dry_run" = 1 ]; then echo "would run: $*"; else echo "+ $*"; "$@"; fi
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
# A staging tree's files belong to root; the target's install run gives them to the account.
if [ -n "$root" ]; then group=root; else group=$user; fi

# 2. The virtualenv and the package (from a wheel, else this checkout); an upgrade reinstalls.
run mkdir -p "$root$prefix"
[ -x "$venv/bin/python" ] || run python3 -m venv "$venv"
target=${wheel:-$checkout}
[ -n "$extras" ] && target="$target[$extras]"
# python -m pip: a staged tree's pip script names PREFIX, where it does not live yet.
run "$venv/bin/python" -m pip install -q --upgrade "$target"
if [ -n "$root" ]; then
  # The scripts' #! lines name the staging path: point them at PREFIX, where the tree will live.
  if [ "$dry_run" = 1 ]; then echo "would point the #! lines of $venv/bin at $prefix/venv"; fi
  for script in "$venv"/bin/*; do
    if [ ! -L "$script" ] && head -n 1 "$script" | grep -q "^#!$venv/"; then
      run sed -i "1s|^#!$venv/|#!$prefix/venv/|" "$script"
    fi
  done
  for file in "$venv/pyvenv.cfg" "$venv"/bin/activate*; do
    if [ -f "$file" ]; then run sed -i "s|$venv|$prefix/venv|g" "$file"; fi
  done
fi
run mkdir -p "$root$prefix/bin"
if [ "$dry_run" = 1 ]; then
  echo "would install $checkout/deploy/idb-stats-as-service -> $root$prefix/bin/ (prefix $prefix, user $user)"
else
  sed -e "s|^prefix=/opt/idb-stats |prefix=$prefix |" -e "s|^user=idb-stats |user=$user |" \
    "$checkout/deploy/idb-stats-as-service" > "$root$prefix/bin/idb-stats-as-service"
  chmod 0755 "$root$prefix/bin/idb-stats-as-service"
fi
run mkdir -p "$root$prefix/share/docs"
run cp "$checkout/README.md" "$checkout"/docs/*.md "$root$prefix/share/docs/"

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
for name in source-dsn store-url store-api-key store-password api-dsn notify; do
  [ -e "$etc/credentials/$name" ] || run install -m 0600 /dev/null "$etc/credentials/$name"
done

# 4. The units, pointing at this prefix.
run mkdir -p "$units"
for unit in "$checkout"/systemd/*; do
  if [ "$dry_run" = 1 ]; then
    echo "would install $unit -> $units/$(basename "$unit") (prefix $prefix)"
  else
    sed "s|/opt/idb-stats|$prefix|g" "$unit" > "$units/$(basename "$unit").tmp"
    chmod 0644 "$units/$(basename "$unit").tmp"
    mv "$units/$(basename "$unit").tmp" "$units/$(basename "$unit")"
  fi
done

# 5. Enable the timers: only once the service can reach everything (or --enable), and the api
# and monthly timers only where there is an ingest database, else they would fail every time.
api_configured() {
  [ -s "$etc/credentials/api-dsn" ] || awk '/^\[/ { section = $0 }
    section == "[api]" && /^[[:space:]]*dsn(_file)?[[:space:]]*=/ { found = 1 }
    END { exit !found }' "$etc/config.toml" 2>/dev/null
}
wanted="idb-stats-collect.timer idb-stats-verify.timer"
if api_configured; then wanted="$wanted idb-stats-api.timer idb-stats-monthly.timer"; fi
if [ "$dry_run" = 1 ]; then
  echo "would enable $wanted once \`idb-stats-as-service check-config --connect\` passes"
elif ! systemd_running; then
  echo "systemd is not running here (or --root): timers not enabled; on the target run:" \
    "$prefix/bin/idb-stats-as-service check-config --connect && systemctl enable --now $wanted"
else
  run systemctl daemon-reload
  if [ "$enable" = 1 ] || "$root$prefix/bin/idb-stats-as-service" check-config --connect; then
    run systemctl enable --now $wanted
  else
    echo "timers NOT enabled: check-config --connect failed (above). Write the credentials in" \
      "$etc/credentials/, then run: $prefix/bin/idb-stats-as-service check-config --connect" \
      "&& systemctl enable --now $wanted"
  fi
fi
if [ "$dry_run" = 1 ]; then
  echo "would install idb-stats in $root$prefix (nothing was changed)"
else
  echo "installed idb-stats in $root$prefix"
fi
