#!/usr/bin/env bash
# Does .ci/run install everything on a bare Debian 12? This builds a throwaway
# bookworm root (debootstrap --variant=minbase), puts a clean clone of this
# repository's HEAD in it, and inside a chroot runs:
#   1. the install half of .ci/run (every line before `cargo fmt --all --check`),
#      then checks every tool the tests need, and what `cargo build` needs
#      (a linker/C compiler, TLS to crates.io);
#   2. the README's "Quick start" apt line, then the same checks again;
#   3. with --build only: the whole .ci/run (fmt, clippy, every test: long).
# Step 2 is skipped with --no-readme (then --build tests .ci/run on its own).
# Rust is not installed in the root: the host's ~/.cargo and ~/.rustup are
# bind-mounted read-only at /root/.cargo and /root/.rustup, with
# /root/.cargo/bin on PATH and a writable CARGO_HOME of the root's own
# (/root/cargo-home), so crates are downloaded afresh as on a new machine.
#
# Usage: scripts/fresh-debian-check.sh [--build] [--no-readme] [--keep] [--dir DIR] [--mirror URL]
#   --build   also run the whole .ci/run inside the chroot (after step 2)
#   --no-readme  skip the README's apt line
#   --keep    keep the root afterwards (default: removed; mounts always undone)
#   --dir     where to build the root (default: a new /var/tmp/cairn-fresh.XXXXXX)
#   --mirror  Debian mirror (default http://deb.debian.org/debian)
# Needs root (debootstrap, mount, chroot) and network access to the Debian
# mirror, PyPI and crates.io. Takes about 6 minutes without --build.
# Exit status: 0 when .ci/run's install half alone brought everything (and
# the README line and --build's run passed); 3 when everything is there at
# the end but only thanks to the README line (.ci/run alone missed something
# or failed); 1 when something is still missing at the end, or --build's run
# failed; 2 when the root could not be made.
set -euo pipefail

build=0 readme=1 keep=0 dir="" mirror="http://deb.debian.org/debian"
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=1 ;;
        --no-readme) readme=0 ;;
        --keep) keep=1 ;;
        --dir) dir="$2"; shift ;;
        --mirror) mirror="$2"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

[ "$(id -u)" -eq 0 ] || { echo "run as root (debootstrap, mount, chroot)" >&2; exit 2; }
repo="$(cd "$(dirname "$0")/.." && pwd)"
grep -qx 'cargo fmt --all --check' "$repo/.ci/run" || {
    echo ".ci/run has no line 'cargo fmt --all --check': cannot tell its install half" >&2; exit 2; }
for d in "$HOME/.cargo/bin" "$HOME/.rustup/toolchains"; do
    [ -d "$d" ] || { echo "no $d on the host: install Rust with rustup first" >&2; exit 2; }
done

start=$SECONDS
stamp() { printf '[%4ds] %s\n' $((SECONDS - start)) "$*"; }

if ! command -v debootstrap >/dev/null; then
    stamp "installing debootstrap on the host"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

if [ -z "$dir" ]; then
    dir="$(mktemp -d /var/tmp/cairn-fresh.XXXXXX)"
else
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [ -z "$(ls -A "$dir")" ] || { echo "$dir is not empty" >&2; exit 2; }
fi
[ "$dir" != / ] || exit 2
# mktemp makes it 0700, and it becomes the chroot's /: then no other user
# (apt's _apt, a test that drops root) could enter anything inside.
chmod 755 "$dir"

mounts_under() { findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d "/") == 1' | sort -r; }
cleanup() {
    local rc=$? pid m
    set +e
    # Anything still running inside the root (a daemon a package's script
    # started, a test's leftover): only processes whose root is this chroot.
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
        [ "$(readlink "/proc/$pid/root" 2>/dev/null)" = "$dir" ] && kill -9 "$pid" 2>/dev/null
    done
    sleep 0.5
    for m in $(mounts_under); do
        umount -R "$m" 2>/dev/null || umount -R -l "$m" 2>/dev/null
    done
    if [ -n "$(mounts_under)" ]; then
        echo "still mounted under $dir, NOT removing it:" >&2; mounts_under >&2
    elif [ "$keep" -eq 1 ]; then
        echo "kept the root at $dir"
    else
        rm -rf --one-file-system "$dir"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stamp "debootstrap --variant=minbase bookworm $dir $mirror"
if ! debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.debootstrap.log" 2>&1; then
    tail -n 20 "$dir.debootstrap.log" >&2
    echo "debootstrap failed (is $mirror reachable?); log: $dir.debootstrap.log" >&2
    exit 2
fi
rm -f "$dir.debootstrap.log"
stamp "root made ($(du -sh --one-file-system "$dir" | cut -f1))"

# A clean clone of HEAD: only what is committed, whatever the work tree holds.
head="$(git -C "$repo" rev-parse HEAD)"
git clone -q --no-checkout "$repo" "$dir/root/cairn"
git -C "$dir/root/cairn" checkout -q --detach "$head"
stamp "cloned $head"

# What a chroot lacks next to a booted machine: name resolution, and a rule
# that package scripts don't start services (etcd-server's would start etcd
# inside the chroot, and it would outlive this script).
cp -L /etc/resolv.conf "$dir/etc/resolv.conf"
# The host's own CAs (/usr/local/share/ca-certificates): where the network
# goes through a TLS-inspecting proxy, every machine here trusts its CA, and
# so must this root for pip and cargo to reach PyPI and crates.io. Debian's
# ca-certificates package adds them to the system bundle when it is installed
# (by whichever step installs it): none of the project's steps need to.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    mkdir -p "$dir/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
fi
printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
chmod 755 "$dir/usr/sbin/policy-rc.d"

mount -t proc proc "$dir/proc"
mount --rbind /sys "$dir/sys";  mount --make-rslave "$dir/sys"
mount --rbind /dev "$dir/dev";  mount --make-rslave "$dir/dev"
for d in .cargo .rustup; do
    mkdir -p "$dir/root/$d"
    mount --bind "$HOME/$d" "$dir/root/$d"
    mount -o remount,bind,ro "$dir/root/$d"
done

cat >"$dir/root/fresh-inside.sh" <<'INSIDE'
set -uo pipefail
build="$1" readme="$2"
cd /root/cairn
t0=$SECONDS
say() { printf '[in %4ds] %s\n' $((SECONDS - t0)) "$*"; }

missing=()
have() { # have NAME COMMAND...: runs the command, records NAME as missing if it fails
    local name="$1"; shift
    local out
    if out="$("$@" 2>&1)"; then
        printf '  %-40s ok   %s\n' "$name" "$(printf '%s' "$out" | head -n 1 | cut -c1-70)"
    else
        printf '  %-40s MISSING  %s\n' "$name" "$(printf '%s' "$out" | tail -n 1 | cut -c1-70)"
        missing+=("$name")
    fi
}
check_tools() {
    missing=()
    echo "-- tools the tests need"
    have protoc protoc --version
    have timestamp.proto test -f /usr/include/google/protobuf/timestamp.proto
    have etcd etcd --version
    have fusermount3 fusermount3 -V
    have rclone rclone --version
    have ip ip -V
    have systemd-analyze systemd-analyze --version
    have rsync rsync --version
    have git git --version
    have make make --version
    have tar tar --version
    have 'python3 -m venv' sh -c 'rm -rf /tmp/venv-check && python3 -m venv /tmp/venv-check && /tmp/venv-check/bin/python -m pip --version'
    have chromium sh -c 'chromium --version 2>/dev/null'
    have fonts-dejavu test -d /usr/share/fonts/truetype/dejavu
    for m in boto3 s3fs moto.server prometheus_client kubernetes_validate; do
        have "python3: import $m" python3 -c "import $m"
    done
    have 'aws --version' aws --version
    tools_missing=("${missing[@]}")
    missing=()
    echo "-- what cargo build needs"
    have 'cargo --version' cargo --version
    have 'cc (C compiler)' cc --version
    have 'C program compiles+links' sh -c 'printf "#include <stdio.h>\nint main(void){puts(\"hi\");return 0;}\n" >/tmp/hi.c && cc /tmp/hi.c -o /tmp/hi && /tmp/hi'
    have 'ca-certificates' test -s /etc/ssl/certs/ca-certificates.crt
    have 'Rust hello links (cc as linker)' sh -c 'rm -rf /tmp/hello && cargo new -q --vcs none /tmp/hello && cargo build -q --offline --manifest-path /tmp/hello/Cargo.toml && /tmp/hello/target/debug/hello'
    if [ "${fetched:-0}" -eq 0 ]; then
        local n=${#missing[@]}
        have 'cargo fetch --locked (crates.io, TLS)' cargo fetch --locked -q
        [ ${#missing[@]} -eq "$n" ] && fetched=1
    fi
    build_missing=("${missing[@]}")
    echo "-- informational (not needed by the present build: aws-lc-sys builds with cc, not cmake)"
    for t in c++ cmake perl pkg-config clang curl sudo; do
        if command -v "$t" >/dev/null; then printf '  %-40s present\n' "$t"; else printf '  %-40s absent\n' "$t"; fi
    done
}
summary() {
    echo "== $1: tools missing: ${tools_missing[*]:-none}; build prerequisites missing: ${build_missing[*]:-none}"
}

say "cargo in the chroot: $(cargo --version 2>&1)"
dpkg-query -W -f '${binary:Package}\n' | sort >/tmp/pkgs.minbase

# 1. The install half of .ci/run, as CI runs it (from .ci/, so its cd works).
sed '/^cargo fmt --all --check$/,$d' .ci/run >.ci/run-install-half
say "running .ci/run's install half ($(wc -l <.ci/run-install-half) lines)"
CI=true bash .ci/run-install-half </dev/null
rc=$?
say ".ci/run's install half exited $rc"
dpkg-query -W -f '${binary:Package}\n' | sort >/tmp/pkgs.ci
echo "-- Debian packages the install half added: $(comm -13 /tmp/pkgs.minbase /tmp/pkgs.ci | wc -l)"
echo "   (gcc: $(grep -qx 'gcc' /tmp/pkgs.ci && echo yes || echo no), libc6-dev: $(grep -qx 'libc6-dev' /tmp/pkgs.ci && echo yes || echo no), ca-certificates: $(grep -qx 'ca-certificates' /tmp/pkgs.ci && echo yes || echo no))"
check_tools
ci_tools_missing=("${tools_missing[@]}"); ci_build_missing=("${build_missing[@]}")
summary "after .ci/run's install half alone"

# 2. The README's Quick start apt line.
readme_rc=0
if [ "$readme" -eq 1 ]; then
readme_line="$(sed -n '/^## Quick start/,/^## /p' README.md | grep -m1 '^apt-get update && apt-get install')"
if [ -z "$readme_line" ]; then
    echo "README.md's Quick start has no 'apt-get update && apt-get install' line" >&2
    readme_rc=99
else
    say "running the README's line: $readme_line"
    DEBIAN_FRONTEND=noninteractive bash -c "$readme_line" </dev/null >/tmp/readme-apt.log 2>&1
    readme_rc=$?
    [ "$readme_rc" -eq 0 ] || tail -n 20 /tmp/readme-apt.log
    say "README line exited $readme_rc"
    dpkg-query -W -f '${binary:Package}\n' | sort >/tmp/pkgs.readme
    echo "-- Debian packages the README line added: $(comm -13 /tmp/pkgs.ci /tmp/pkgs.readme | tr '\n' ' ')"
fi
check_tools
summary "after the README line too"
fi
echo "== .ci/run's install half exited $rc; alone it left missing: tools: ${ci_tools_missing[*]:-none}; for cargo build: ${ci_build_missing[*]:-none}"

status=0
if [ "$rc" -ne 0 ] || [ "$readme_rc" -ne 0 ] || [ ${#tools_missing[@]} -gt 0 ] || [ ${#build_missing[@]} -gt 0 ]; then
    status=1
elif [ ${#ci_tools_missing[@]} -gt 0 ] || [ ${#ci_build_missing[@]} -gt 0 ]; then
    echo "== WARNING: .ci/run's install half alone does not make this bare machine ready (see above)"
    status=3
fi

# 3. The whole .ci/run (long: fmt, clippy, every test), only when asked.
if [ "$build" -eq 1 ]; then
    say "running the whole .ci/run"
    CI=true bash .ci/run </dev/null
    full_rc=$?
    say "the whole .ci/run exited $full_rc"
    [ "$full_rc" -eq 0 ] || status=1
fi
say "done"
exit "$status"
INSIDE

stamp "entering the chroot"
set +e
chroot "$dir" /usr/bin/env -i \
    HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/root/.rustup CARGO_HOME=/root/cargo-home \
    /bin/bash /root/fresh-inside.sh "$build" "$readme" &
# In the background so that a TERM to this script is handled at once (the
# cleanup then ends what runs inside the root and undoes the mounts).
wait $!
status=$?
set -e
stamp "chroot part exited $status (total $((SECONDS - start)) s)"
exit "$status"
