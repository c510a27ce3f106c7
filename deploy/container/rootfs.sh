#!/usr/bin/env bash
# Lays out the runtime image's whole root filesystem in OUT: the binaries (stripped), every shared
# library they load (walked with ldd, so the list never goes stale) and the dynamic loader, the CA
# bundle, pinghelp's help files, and passwd/group naming uid 10001. Nothing else: no shell, no
# package manager, no curl (health checks use `sidecar probe`).
# Usage: deploy/container/rootfs.sh OUT HELP_SOURCE HELP_DEST BINARY...
#   HELP_DEST: where pinghelp looks by default (the build's PINGHELP_DEFAULT_HELP_DIR)
# Runs in the Dockerfile's build stage, and on a Debian 12 host to assemble the same image from
# binaries built there (deploy/container/build-image.sh --prebuilt).
set -euo pipefail
usage="usage: rootfs.sh OUT HELP_SOURCE HELP_DEST BINARY..."
out=${1:?$usage}
help=${2:?$usage}
help_dest=${3:?$usage}
shift 3
[[ $# -gt 0 ]] || { echo "rootfs.sh: no binary given" >&2; exit 2; }

rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out$(dirname "$help_dest")" "$out/etc/ssl/certs" "$out/tmp"
chmod 1777 "$out/tmp"
for bin in "$@"; do
  strip --strip-unneeded -o "$out/usr/local/bin/$(basename "$bin")" "$bin"
done

# ldd prints "libx.so.1 => /lib/.../libx.so.1 (0x...)" and the loader as "/lib64/ld-linux... (0x...)".
# Each is copied as a file under the path the binary asks for (cp -L: the target of the
# soname's symlink), so no ld.so.cache is needed.
deps=$(for bin in "$@"; do ldd "$bin"; done)
libs=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $2 ~ /^\(/ { print $1 }' <<<"$deps" | sort -u)
missing=$(grep -F 'not found' <<<"$deps" || true)
[[ -z $missing ]] || { echo "rootfs.sh: unresolved libraries: $missing" >&2; exit 1; }
for lib in $libs; do
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
done

cp -r "$help" "$out$help_dest"
cp -L /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-certificates.crt"
cat > "$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/usr/sbin/nologin
sidecar:x:10001:10001:sidecar:/nonexistent:/usr/sbin/nologin
PASSWD
cat > "$out/etc/group" <<'GROUP'
root:x:0:
sidecar:x:10001:
GROUP
printf 'passwd: files\ngroup: files\nhosts: files dns\n' > "$out/etc/nsswitch.conf"
chmod -R u=rwX,go=rX "$out/usr" "$out/etc"
