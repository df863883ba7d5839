#!/usr/bin/env bash
# Builds the Debian package (scripts/deb.sh), installs it with dpkg on this machine and checks it:
# the binary, the unit, the user and group, modes, the man page, completions; a producer in the
# purgeq group can enqueue into the worker's database and a user outside it cannot (two real
# users); then removes and purges it, checking what stays and what goes.
#
# Needs root on a Debian-like machine where purgeq is not otherwise installed. Leaves nothing
# behind (the two test users are deleted). Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "deb-check.sh must run as root (it installs the package)" >&2; exit 1; }
if dpkg -s purgeq >/dev/null 2>&1 || getent passwd purgeq >/dev/null; then
  echo "purgeq is already installed here (or a purgeq user exists): not touching it" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
for tool in man systemd-analyze; do
  command -v "$tool" >/dev/null || need_apt=1
done
if [ -n "${need_apt:-}" ]; then
  apt-get update -qq && apt-get install -y -qq man-db systemd >/dev/null
fi

deb=$(bash scripts/deb.sh | tail -n 1)
echo "== package: $deb"

producer=purgeq-ci-producer
outsider=purgeq-ci-outsider
cleanup() {
  dpkg --purge purgeq >/dev/null 2>&1 || true
  userdel -r "$producer" >/dev/null 2>&1 || true
  userdel -r "$outsider" >/dev/null 2>&1 || true
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
expect_mode() { # path, mode owner:group
  local got
  got=$(stat -c '%a %U:%G' "$1")
  [ "$got" = "$2" ] || fail "$1 is $got, expected $2"
  echo "ok: $1 $got"
}

echo "== dpkg -i"
dpkg -i "$deb"
[ "$(command -v purgeq)" = /usr/bin/purgeq ] || fail "purgeq is not /usr/bin/purgeq"
purgeq --version
systemd-analyze verify --man=no /usr/lib/systemd/system/purgeq.service
echo "ok: systemd-analyze verify"
grep -q '^ExecStart=/usr/bin/purgeq worker$' /usr/lib/systemd/system/purgeq.service ||
  fail "the packaged unit does not run /usr/bin/purgeq"
[ -L /etc/systemd/system/multi-user.target.wants/purgeq.service ] || fail "the unit is not enabled"
echo "ok: enabled"
getent passwd purgeq >/dev/null || fail "no purgeq user"
getent group purgeq >/dev/null || fail "no purgeq group"
echo "ok: user and group purgeq"
expect_mode /etc/purgeq "750 root:purgeq"
expect_mode /etc/purgeq/purgeq.toml "640 root:purgeq"
expect_mode /var/lib/purgeq "2770 purgeq:purgeq"
grep -v '^#' /etc/purgeq/purgeq.toml | grep -q . && fail "purgeq.toml has an uncommented line"
man -w purgeq
for f in /usr/share/bash-completion/completions/purgeq /usr/share/zsh/vendor-completions/_purgeq \
  /usr/share/fish/vendor_completions.d/purgeq.fish /usr/share/doc/purgeq/README.md \
  /usr/share/doc/purgeq/copyright /usr/share/doc/purgeq/examples/purgeq.env.example; do
  [ -s "$f" ] || fail "$f is missing"
done
echo "ok: completions and docs"

echo "== producers: one in the purgeq group, one outside it"
useradd --create-home --groups purgeq "$producer"
useradd --create-home "$outsider"
db=/var/lib/purgeq/purgeq.db
runuser -u "$producer" -- env PURGEQ_DB="$db" purgeq enqueue https://cdn.example.com/a.js
runuser -u "$producer" -- purgeq --db "$db" status | grep -q 'a.js' || fail "the job is not listed"
echo "ok: the producer enqueued"
if out=$(runuser -u "$outsider" -- env PURGEQ_DB="$db" purgeq enqueue https://cdn.example.com/b.js 2>&1); then
  fail "a user outside the purgeq group could enqueue"
fi
echo "outsider: $out"
echo "$out" | grep -q "$db" || fail "the outsider's error does not name the database"
echo "$out" | grep -qi "permission denied" || fail "the outsider's error does not say why"
echo "ok: the outsider was refused"
expect_mode "$db" "660 $producer:purgeq"

echo "== upgrade (reinstall): the database and its modes stay"
dpkg -i "$deb" >/dev/null
expect_mode /var/lib/purgeq "2770 purgeq:purgeq"
expect_mode "$db" "660 $producer:purgeq"

echo "== dpkg --remove: the binary goes; config, database, user and group stay"
dpkg --remove purgeq
[ ! -e /usr/bin/purgeq ] || fail "/usr/bin/purgeq stayed"
[ ! -e /usr/lib/systemd/system/purgeq.service ] || fail "the unit stayed"
[ -f /etc/purgeq/purgeq.toml ] || fail "the conffile went on remove"
[ -f "$db" ] || fail "the database went on remove"
getent passwd purgeq >/dev/null || fail "the user went on remove"
getent group purgeq >/dev/null || fail "the group went on remove"
echo "ok: removed"

echo "== dpkg --purge: everything goes"
dpkg --purge purgeq
for p in /etc/purgeq /var/lib/purgeq /etc/systemd/system/multi-user.target.wants/purgeq.service; do
  [ ! -e "$p" ] || fail "$p stayed after purge"
done
getent passwd purgeq >/dev/null && fail "the user stayed after purge"
getent group purgeq >/dev/null && fail "the group stayed after purge"
echo "ok: purged"
