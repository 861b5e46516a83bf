#!/usr/bin/env bash
# Throwaway OpenSSH server for llorch's tests and for trying `llorch pool --host` on one machine.
#
#   scripts/ci-sshd.sh install          install openssh-server (Debian/Ubuntu, needs root) if sshd is missing
#   scripts/ci-sshd.sh start DIR [PORT] start sshd on 127.0.0.1:PORT as the current user, state in DIR
#   scripts/ci-sshd.sh stop DIR         stop the sshd started with DIR
#
# `start` generates a host key, a user key and an authorized_keys file in DIR, writes a known_hosts
# file and prints the `llorch hosts add` line that reaches it. Nothing outside DIR is touched
# (except /run/sshd, which sshd needs when it runs as root). The llorch tests start their own sshd
# the same way from Rust (bin/llorch-ctl/tests/common); they call `install` when sshd is missing.
set -euo pipefail

SSHD="${SSHD:-/usr/sbin/sshd}"

die() { echo "ci-sshd: $*" >&2; exit 1; }

install_sshd() {
    if [[ -x "$SSHD" ]] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null; then
        echo "ci-sshd: $SSHD already installed"
        return
    fi
    command -v apt-get >/dev/null || die "sshd missing and apt-get not available: install OpenSSH server by hand"
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "sshd missing: run as root or install openssh-server"
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! $sudo apt-get install -y --no-install-recommends openssh-server openssh-client >/dev/null 2>&1; then
        $sudo apt-get update -qq
        $sudo apt-get install -y --no-install-recommends openssh-server openssh-client >/dev/null
    fi
    [[ -x "$SSHD" ]] || die "openssh-server installed but $SSHD is missing"
    echo "ci-sshd: installed $("$SSHD" -V 2>&1 | head -n1 || true)"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
        || echo $((20000 + RANDOM % 20000))
}

start_sshd() {
    local dir="${1:?usage: start DIR [PORT]}" port="${2:-$(free_port)}"
    [[ -x "$SSHD" ]] || die "$SSHD missing; run: $0 install"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [[ -f "$dir/host_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -C ci-sshd-host -f "$dir/host_ed25519"
    [[ -f "$dir/id_ed25519" ]] || ssh-keygen -q -t ed25519 -N '' -C ci-sshd-user -f "$dir/id_ed25519"
    cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
    chmod 600 "$dir/authorized_keys"
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$dir/host_ed25519.pub")" > "$dir/known_hosts"
    cat > "$dir/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_ed25519
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
AllowUsers $(id -un)
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
LogLevel VERBOSE
EOF
    if [[ "$(id -u)" == 0 ]]; then mkdir -p /run/sshd && chmod 755 /run/sshd; fi
    "$SSHD" -t -f "$dir/sshd_config"
    "$SSHD" -f "$dir/sshd_config" -E "$dir/sshd.log"
    for _ in $(seq 50); do
        [[ -s "$dir/sshd.pid" ]] && break
        sleep 0.1
    done
    [[ -s "$dir/sshd.pid" ]] || die "sshd did not start; see $dir/sshd.log"
    echo "ci-sshd: sshd pid $(cat "$dir/sshd.pid") on 127.0.0.1:$port"
    echo "llorch hosts add NAME 127.0.0.1 --port $port --user $(id -un) --identity $dir/id_ed25519" \
         "--ssh-config /dev/null --ssh-option UserKnownHostsFile=$dir/known_hosts --ssh-option StrictHostKeyChecking=yes"
}

stop_sshd() {
    local dir="${1:?usage: stop DIR}"
    [[ -s "$dir/sshd.pid" ]] || die "no $dir/sshd.pid"
    kill "$(cat "$dir/sshd.pid")"
    rm -f "$dir/sshd.pid"
}

case "${1:-}" in
    install) install_sshd ;;
    start) shift; start_sshd "$@" ;;
    stop) shift; stop_sshd "$@" ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
