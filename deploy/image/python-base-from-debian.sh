#!/usr/bin/env bash
# Makes a stand-in for the image's base, python:3.11-slim-bookworm, from Debian's packages alone,
# for machines that reach Debian's mirror and PyPI but no container registry (docs/deploy.md,
# "Building without a registry"). Needs root, debootstrap and podman:
#   deploy/image/python-base-from-debian.sh [TAG]    (default localhost/stellwerk-python:3.11-bookworm)
#   podman build --build-arg PYTHON_IMAGE=localhost/stellwerk-python:3.11-bookworm \
#     -f deploy/Dockerfile -t stellwerk .
# It is Debian bookworm's own Python 3.11 (3.11.2) with venv and pip, as `python`; the official
# image builds a newer 3.11 into /usr/local. Certificates of a TLS-inspecting proxy that this
# machine trusts (/usr/local/share/ca-certificates) are trusted inside too, so that pip reaches
# PyPI from the build.
set -euo pipefail

tag=${1:-localhost/stellwerk-python:3.11-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }

if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi

# What the slim images leave out: package lists and caches, documentation, translations.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old "$root"/var/log/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/*

tar --numeric-owner -C "$root" -c . \
    | podman import --quiet --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$tag" >/dev/null
echo "$tag"
