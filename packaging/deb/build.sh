#!/usr/bin/env bash
# Builds the Debian package: target/deb/keyward_<version>_<arch>.deb with the binary, the
# hardened systemd unit, a commented /etc/keyward/keyward.toml, and manual pages generated from
# the command line's own help. Needs only dpkg-deb (Debian's dpkg) and the Rust toolchain.
#
#   bash packaging/deb/build.sh                      # builds the release binary first
#   KEYWARD_BIN=target/release/keyward bash packaging/deb/build.sh   # packages that binary
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
here=packaging/deb

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
arch="$(dpkg --print-architecture)"
bin="${KEYWARD_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --locked -p keyward
  bin=target/release/keyward
fi
[ -x "$bin" ] || { echo "FATAL: no keyward binary at $bin" >&2; exit 1; }
built="$("$bin" --version)"
[ "$built" = "keyward $version" ] || { echo "FATAL: $bin says '$built', the workspace is $version" >&2; exit 1; }

out=target/deb
root="$out/keyward_${version}_${arch}"
rm -rf "$root"
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/keyward" \
  "$root/usr/share/man/man1" "$root/usr/share/doc/keyward"

install -m 0755 "$bin" "$root/usr/bin/keyward"
strip --strip-unneeded "$root/usr/bin/keyward" 2>/dev/null || true
install -m 0644 "$here/keyward.service" "$root/lib/systemd/system/keyward.service"
install -m 0644 "$here/keyward.toml" "$root/etc/keyward/keyward.toml"
"$bin" generate-man "$root/usr/share/man/man1" 2>/dev/null
gzip -9n "$root"/usr/share/man/man1/*.1
install -m 0644 "$here/copyright" "$root/usr/share/doc/keyward/copyright"
printf 'keyward (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- keyward maintainers <keyward@localhost>  %s\n' \
  "$version" "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" \
  | gzip -9n > "$root/usr/share/doc/keyward/changelog.gz"

for script in postinst prerm postrm; do
  install -m 0755 "$here/$script" "$root/DEBIAN/$script"
done
echo /etc/keyward/keyward.toml > "$root/DEBIAN/conffiles"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat > "$root/DEBIAN/control" <<CONTROL
Package: keyward
Version: $version
Architecture: $arch
Maintainer: keyward maintainers <keyward@localhost>
Installed-Size: $size
Depends: libc6, adduser
Section: net
Priority: optional
Homepage: https://keyward.invalid/
Description: self-hosted personal access token service
 keyward issues API tokens that are shown once and stored only as keyed
 hashes, verifies them in microseconds, and lets their owners scope,
 expire, regenerate and revoke them. It serves an HTTP API, OAuth
 introspection and revocation, forward-auth for reverse proxies, a web
 page, and the keyward command line.
CONTROL

dpkg-deb --root-owner-group --build "$root" "$out/keyward_${version}_${arch}.deb" >/dev/null
echo "$out/keyward_${version}_${arch}.deb"
