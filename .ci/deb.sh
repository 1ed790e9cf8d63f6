#!/usr/bin/env bash
# The Debian package on this machine: build it (release binary), install it with dpkg -i, check
# its files, run the installed binary and `keyward serve` from the installed paths as the
# package's user with the packaged config, verify the systemd unit, then remove the package.
#
#   bash .ci/deb.sh                                   # builds the release binary
#   KEYWARD_BIN=target/debug/keyward bash .ci/deb.sh  # packages that binary instead (quicker)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" != 0 ]; then echo "FATAL: .ci/deb.sh installs a package: run it as root" >&2; exit 1; fi
deb="$(bash packaging/deb/build.sh | tail -1)"
echo "built $deb"
dpkg-deb --info "$deb"
dpkg -i "$deb"

server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  dpkg -r keyward >/dev/null 2>&1 || true
}
trap cleanup EXIT

fail() { echo "FATAL: $*" >&2; exit 1; }
for f in /usr/bin/keyward /lib/systemd/system/keyward.service /etc/keyward/keyward.toml \
         /usr/share/man/man1/keyward.1.gz /usr/share/man/man1/keyward-token-create.1.gz \
         /usr/share/doc/keyward/copyright; do
  dpkg -L keyward | grep -qx "$f" || fail "the package does not list $f"
  [ -e "$f" ] || fail "$f is not installed"
done
grep -qx /etc/keyward/keyward.toml /var/lib/dpkg/info/keyward.conffiles || fail "keyward.toml is not a conffile"
getent passwd keyward >/dev/null || fail "the package did not create the keyward user"
/usr/bin/keyward --version
page="$(zcat /usr/share/man/man1/keyward-token-create.1.gz)"
[[ "$page" == *'\-\-scope'* ]] || fail "the man page of token create lacks --scope"

if command -v systemd-analyze >/dev/null; then
  # Checks the unit's syntax and that its ExecStart exists (the machine need not run systemd).
  systemd-analyze verify /lib/systemd/system/keyward.service
else
  echo "systemd-analyze is not installed: the unit's syntax is not checked here"
fi

# The service as the unit runs it: its user, its config; the data dir systemd would make.
install -d -o keyward -g keyward -m 0700 /var/lib/keyward
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
as_keyward() { setpriv --reuid=keyward --regid=keyward --init-groups -- "$@"; }
# exec: the server replaces the subshell, so killing $server_pid stops it (not only the subshell).
(cd /var/lib/keyward && KEYWARD_LISTEN="127.0.0.1:$port" exec setpriv --reuid=keyward --regid=keyward \
  --init-groups -- /usr/bin/keyward --config /etc/keyward/keyward.toml serve) &
server_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "$server_pid" 2>/dev/null || fail "keyward serve exited"
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/readyz"; echo
[ "$(stat -c '%U %a' /var/lib/keyward/server.key)" = "keyward 600" ] || fail "server.key is not the service user's, mode 0600"
as_keyward /usr/bin/keyward --config /etc/keyward/keyward.toml user add deb-check >/dev/null
secret="$(as_keyward /usr/bin/keyward --config /etc/keyward/keyward.toml token create --user deb-check --name ci --scope tokens:read --expires 1d 2>/dev/null)"
curl -fsS -H "Authorization: Bearer $secret" "http://127.0.0.1:$port/v1/tokens/self" | grep -q '"name":"ci"' \
  || fail "a token made with the installed command line does not work on the installed server"
echo "the installed keyward serves from /usr/bin with /etc/keyward/keyward.toml and /var/lib/keyward"
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
rm -rf /var/lib/keyward
