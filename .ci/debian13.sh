#!/usr/bin/env bash
# The Debian 13 leg of `make test`: the test suite on GStreamer 1.26 and Python 3.13, in a Debian 13 root file
# system built here from Debian's packages.
#
#   .ci/debian13.sh [PYTEST ARGS...]
#   .ci/debian13.sh --run COMMAND [ARGS...]   (a command in the tree instead of pytest, e.g. a benchmark)
#
# 1. The root file system (debootstrap, minbase) is built once in $PYINFER_DEBIAN13_ROOT
#    (/var/cache/pyinfer/debian13) from the mirror this machine's apt already uses, and reused while its stamp
#    file says it is complete and of this recipe; anything else is deleted and built again.
# 2. The working tree (tracked and untracked, not ignored files) is copied to /srv/pyinfer inside it, beside
#    the .venv and native helpers an earlier run built there: nothing built for the host is used.
# 3. Inside, `make setup` installs the Debian packages, the venv and the native helpers, then pytest runs.
#
# Every command inside runs in private mount and PID namespaces (unshare): /proc, /dev and /sys are mounted
# there only, so nothing stays mounted afterwards, and every process started inside (mosquitto, redis from the
# tests) dies with the namespace. Each step has a hard time limit.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${PYINFER_DEBIAN13_ROOT:-/var/cache/pyinfer/debian13}
SUITE=trixie
TREE=/srv/pyinfer  # the copy of the working tree, inside ROOT
# Written last by a complete build; a change here rebuilds the root file system on the next run.
RECIPE="pyinfer debian13 rootfs v1: debootstrap --variant=minbase $SUITE; make ca-certificates"
STAMP=$ROOT/.pyinfer-rootfs

# Hard limits, in seconds: per step, and for the whole leg (no step runs past it). A new machine needs about
# 1 min for the root, 4 min for make setup (torch is large); the tests 6 to 7 min on 2 cores.
LIMIT_ROOTFS=${PYINFER_LIMIT_ROOTFS:-600}
LIMIT_SETUP=${PYINFER_LIMIT_SETUP:-1200}
LIMIT_TESTS=${PYINFER_LIMIT_TESTS:-1200}
DEADLINE=$((SECONDS + ${PYINFER_LIMIT_LEG:-2700}))

log() { printf '[debian13 %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "error: $*" >&2; exit 1; }

# limit SECONDS: the step's limit, cut to what is left of the leg's.
limit() {
    local left=$((DEADLINE - SECONDS))
    [ "$left" -gt 0 ] || die "the leg ran out of time (PYINFER_LIMIT_LEG)"
    echo $(($1 < left ? $1 : left))
}

if [ "$(id -u)" != 0 ]; then
    exec sudo --preserve-env=CI,PYINFER_DEBIAN13_ROOT,PYINFER_DEBIAN_MIRROR,PYINFER_DEBIAN_SECURITY_MIRROR \
        --preserve-env=PYINFER_LIMIT_ROOTFS,PYINFER_LIMIT_SETUP,PYINFER_LIMIT_TESTS,PYINFER_LIMIT_LEG "$0" "$@"
fi

# The mirror this machine's apt uses for its own release, and its security mirror: from deb822 *.sources files
# and one-line *.list files. PYINFER_DEBIAN_MIRROR / PYINFER_DEBIAN_SECURITY_MIRROR override them.
host_mirrors() {
    /usr/bin/python3 - <<'EOF'
import glob, os, re

codename = ""
with open("/etc/os-release") as f:
    for line in f:
        if line.startswith("VERSION_CODENAME="):
            codename = line.split("=", 1)[1].strip().strip('"')
entries = []  # (uris, suites)
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    text = open(path).read()
    for stanza in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
                continue
            key, _, value = line.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes").lower() != "no":
            entries.append((fields.get("uris", "").split(), fields.get("suites", "").split()))
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    if not os.path.exists(path):
        continue
    for line in open(path):
        words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append(([words[1]], [words[2]]))
main = security = ""
for uris, suites in entries:
    uris = [u for u in uris if u.startswith(("http://", "https://", "file:"))]
    if not uris:
        continue
    if codename in suites and not main:
        main = uris[0]
    if (f"{codename}-security" in suites or f"{codename}/updates" in suites) and not security:
        security = uris[0]
print(main, security or "-")
EOF
}

# in_root LIMIT COMMAND...: run COMMAND (through /bin/sh -c) as root inside ROOT, in new mount and PID
# namespaces, with a clean environment, killed after LIMIT seconds.
in_root() {
    local limit=$1; shift
    local -a envs=(HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        DEBIAN_FRONTEND=noninteractive PIP_CERT=/etc/ssl/certs/ca-certificates.crt CI="${CI:-}")
    local name
    # The host's pip settings (proxy, timeouts), except paths that only exist on the host.
    for name in $(compgen -e); do
        case $name in
            PIP_FIND_LINKS|PIP_CERT|PIP_CONFIG_FILE) ;;
            PIP_*|http_proxy|https_proxy|no_proxy|HTTP_PROXY|HTTPS_PROXY|NO_PROXY) envs+=("$name=${!name}") ;;
        esac
    done
    timeout --kill-after=30 "$(limit "$limit")" unshare --mount --pid --fork --kill-child --propagation private \
        /bin/sh -ec '
            root=$1; shift
            mount -t proc proc "$root/proc"
            mount --rbind /dev "$root/dev"
            mount --rbind /sys "$root/sys"
            mount -t tmpfs tmpfs "$root/run"
            mount -t tmpfs -o size=2g tmpfs "$root/dev/shm"
            exec chroot "$root" "$@"
        ' in_root "$ROOT" /usr/bin/env -i "${envs[@]}" /bin/sh -ec "$*"
}

# The host's resolver, hosts and extra CA certificates (a proxy of this site may have its own CA).
sync_host_files() {
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    cp /etc/hosts "$ROOT/etc/hosts"
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    if ! diff -rq /usr/local/share/ca-certificates "$ROOT/usr/local/share/ca-certificates" >/dev/null 2>&1; then
        rm -rf "$ROOT/usr/local/share/ca-certificates"
        cp -a /usr/local/share/ca-certificates "$ROOT/usr/local/share/ca-certificates"
        # (openssl rehash warns about the bundle file itself: noise)
        in_root 120 "update-ca-certificates 2>&1 >/dev/null | { grep -v 'skipping ca-certificates.crt' >&2 || :; }"
    fi
}

build_rootfs() {
    local mirror security
    read -r mirror security < <(host_mirrors)
    mirror=${PYINFER_DEBIAN_MIRROR:-$mirror}
    security=${PYINFER_DEBIAN_SECURITY_MIRROR:-$security}
    [ -n "$mirror" ] || die "no Debian mirror in /etc/apt/sources.list*; set PYINFER_DEBIAN_MIRROR"
    if ! command -v debootstrap >/dev/null; then
        log "installing debootstrap"
        timeout 600 apt-get update -qq
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq debootstrap >/dev/null
    fi
    log "building the Debian 13 root in $ROOT from $mirror (security: $security)"
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    timeout "$(limit "$LIMIT_ROOTFS")" debootstrap --variant=minbase --include=ca-certificates,make \
        "$SUITE" "$ROOT" "$mirror" > "$ROOT.debootstrap.log" 2>&1 \
        || { tail -30 "$ROOT.debootstrap.log"; die "debootstrap failed"; }
    rm -f "$ROOT/etc/apt/sources.list"
    {
        printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$mirror" "$SUITE" "$SUITE"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        if [ "$security" != - ]; then
            printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$security" "$SUITE"
            printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        fi
    } > "$ROOT/etc/apt/sources.list.d/debian.sources"
    # Packages install without starting their services (mosquitto, redis): the tests start their own.
    printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
    chmod 755 "$ROOT/usr/sbin/policy-rc.d"
    sync_host_files
    in_root "$LIMIT_ROOTFS" "apt-get update -qq && apt-get dist-upgrade -y -qq >/dev/null && apt-get clean"
    echo "$RECIPE" > "$STAMP"
}

# Copy the working tree into ROOT, keeping what an earlier run built there (.venv, native helpers: ignored files).
copy_tree() {
    local dest=$ROOT$TREE
    mkdir -p "$dest"
    find "$dest" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
    (cd "$SRC" && git -c safe.directory="$SRC" ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -xf - -C "$dest"
}

mkdir -p "$(dirname "$ROOT")"
exec 9> "$ROOT.lock"
flock -w 600 9 || die "another run has held $ROOT.lock for 10 minutes"

start=$SECONDS
if [ "$(cat "$STAMP" 2>/dev/null)" != "$RECIPE" ]; then
    build_rootfs
else
    log "reusing the Debian 13 root in $ROOT"
    sync_host_files
fi
log "root file system ready: $((SECONDS - start)) s"

step=$SECONDS
copy_tree
rm -rf "$ROOT/tmp" && mkdir -m 1777 "$ROOT/tmp"
rm -rf "$ROOT/root/.cache/gstreamer-1.0"  # a plugin that failed before stays failed in GStreamer's cache
# The Makefile's Debian packages first, their long dpkg log in a file.
apt_log=/var/log/pyinfer-apt.log
in_root "$LIMIT_SETUP" "cd $TREE && { make apt > $apt_log 2>&1 || { tail -n 40 $apt_log; exit 1; }; }"
log "Debian packages: $((SECONDS - step)) s"
step=$SECONDS
in_root "$LIMIT_SETUP" "cd $TREE && make setup"
log "make setup (venv, native helpers): $((SECONDS - step)) s"
in_root 120 "echo Debian \$(cat /etc/debian_version); cd $TREE && .venv/bin/pyinfer doctor 2>&1 | sed -n 1,3p"

step=$SECONDS
quoted=""
if [ "${1:-}" = --run ]; then
    shift
    [ $# -gt 0 ] || die "--run needs a command"
    rc=0
    in_root "$LIMIT_TESTS" "cd $TREE && $(printf '%q ' "$@")" || rc=$?
    log "command: $((SECONDS - step)) s (exit $rc)"
    exit "$rc"
fi
[ $# = 0 ] || quoted=$(printf ' %q' "$@")
rc=0
# timeout_method=thread: a test stuck inside a C call is still stopped (the signal method waits for it).
in_root "$LIMIT_TESTS" "cd $TREE && .venv/bin/python -m pytest -o timeout_method=thread$quoted" || rc=$?
log "tests: $((SECONDS - step)) s (exit $rc); whole Debian 13 leg: $((SECONDS - start)) s"
exit "$rc"
