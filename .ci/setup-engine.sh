#!/usr/bin/env bash
# Give this machine a Docker API without Docker: rootful podman + runc serving the Docker API on a
# unix socket, a python:<ver>-slim base image built from Debian packages (no image can be pulled
# here), and a real registry (Debian's docker-registry) on loopback.
#
# Idempotent: every step checks first and does nothing when its part is already in place, so a
# second run takes a few seconds.  Runs as root.  See docs/container-engine.md.
#
#   bash .ci/setup-engine.sh            set up whatever is missing, print the env to use
#   bash .ci/setup-engine.sh --check    change nothing; exit 0 only if engine and registry answer
#
# Sourcing the file defines the functions without running anything (the unit tests do that).
#
# Knobs (environment):
#   MLFLOW_CI_ENGINE_SOCKET   socket of podman's Docker API   (/run/mlflow-ci/podman.sock)
#   MLFLOW_CI_REGISTRY_ADDR   host:port of the local registry (127.0.0.1:5000)
#   MLFLOW_CI_BASE_PYTHONS    python versions to tag as python:<v>-slim; default: every Python 3.11.x
#                             found (python3 on PATH, pyenv's versions) plus 3.11 -- see python_versions
set -euo pipefail

RUN_DIR=/run/mlflow-ci
SOCKET=${MLFLOW_CI_ENGINE_SOCKET:-$RUN_DIR/podman.sock}
REGISTRY_ADDR=${MLFLOW_CI_REGISTRY_ADDR:-127.0.0.1:5000}
REGISTRY_DIR=/var/lib/mlflow-ci-registry
CONF_DIR=/etc/mlflow-ci
LOG_DIR=/var/log/mlflow-ci
CONTAINERS_CONF=/etc/containers/containers.conf
REGISTRIES_CONF=/etc/containers/registries.conf.d/50-mlflow-ci.conf
REGISTRY_CONF=$CONF_DIR/registry.yml
HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
IMAGE_CA_PATH=/usr/local/share/mlflow-ci/ca-bundle.crt
SUITE=bookworm
IMAGE_PY=3.11 # the python3 of Debian $SUITE, i.e. of the base image
BOOT_ID_FILE=/proc/sys/kernel/random/boot_id
# Runtime state that a tmpfs /run would lose at a reboot.  Here /run is on the root disk.
PODMAN_STATE_DIRS=(/run/libpod /run/containers)
# What the base image holds.  python-is-python3: MLflow's Dockerfile runs `python`, not `python3`.
BASE_PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
# Packages this script needs.  Deliberately not: uidmap/slirp4netns (rootless only),
# fuse-overlayfs (the kernel's overlayfs works on ext4), crun (fails on the hybrid cgroups here).
# containernetworking-plugins + iptables come in as podman's dependencies and publish ports.
HOST_PACKAGES=(podman runc mmdebstrap docker-registry curl ca-certificates)
# The base image's environment.  Registries inside containers are reached through a
# TLS-intercepting proxy: the host's CA bundle (which trusts it) is copied into the image and
# every TLS client is pointed at that copy.
IMAGE_ENV=(
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    "LANG=C.UTF-8"
    "PIP_CERT=$IMAGE_CA_PATH"
    "REQUESTS_CA_BUNDLE=$IMAGE_CA_PATH"
    "SSL_CERT_FILE=$IMAGE_CA_PATH"
    "CURL_CA_BUNDLE=$IMAGE_CA_PATH"
    "PIP_DISABLE_PIP_VERSION_CHECK=1"
    "PIP_DEFAULT_TIMEOUT=180"
)

STARTED_AT=$SECONDS

log() { printf '[setup-engine %3ds] %s\n' "$((SECONDS - STARTED_AT))" "$*"; }
warn() { printf '[setup-engine %3ds] WARNING: %s\n' "$((SECONDS - STARTED_AT))" "$*" >&2; }
die() {
    printf '[setup-engine] ERROR: %s\n' "$*" >&2
    exit 1
}

# --- pure helpers (unit-tested) -------------------------------------------------------------

# python_versions IMAGE_PY VERSION... -> the versions to tag python:<v>-slim, one per line.
# MLflow 3.17.2's generate-dockerfile uses the full version recorded in the model's
# python_env.yaml (python:3.11.7-slim); its server sandbox uses major.minor (python:3.11-slim).
# Only versions of the image's own Python qualify: a model logged with 3.12 would get 3.11.
python_versions() {
    local image_py=$1 v
    shift
    for v in "$image_py" "$@"; do
        if [[ "$v" == "$image_py" || "$v" == "$image_py".* ]]; then
            printf '%s\n' "$v"
        fi
    done | awk '!seen[$0]++'
}

# host_pythons -> the full versions of the Pythons that may log models here.
host_pythons() {
    local py d
    for py in python3 /usr/bin/python3; do
        command -v "$py" >/dev/null 2>&1 && "$py" -c 'import platform; print(platform.python_version())' 2>/dev/null
    done
    for d in "${PYENV_ROOT:-/root/.pyenv}"/versions/*/; do
        [[ -x "$d/bin/python3" ]] && basename "$d"
    done
    return 0
}

# clamp_limit HARD WANT -> the smaller; "unlimited" counts as infinite.
clamp_limit() {
    local hard=$1 want=$2
    if [[ "$hard" == unlimited ]] || ((hard >= want)); then
        printf '%s\n' "$want"
    else
        printf '%s\n' "$hard"
    fi
}

# render_containers_conf NOFILE NPROC
render_containers_conf() {
    cat <<EOF
# Written by mlflow-ci .ci/setup-engine.sh; rewritten on every run.
[containers]
# Podman's default asks for nofile=1048576, above this machine's hard limit: runc then fails
# with "error setting rlimit". Stay at or below \`ulimit -Hn\`.
default_ulimits = ["nofile=$1:$1", "nproc=$2:$2"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
}

# render_registries_conf HOST:PORT -> the loopback registry speaks plain HTTP.
render_registries_conf() {
    local port=${1##*:}
    cat <<EOF
# Written by mlflow-ci .ci/setup-engine.sh: the loopback registry speaks plain HTTP.
[[registry]]
location = "localhost:$port"
insecure = true

[[registry]]
location = "127.0.0.1:$port"
insecure = true
EOF
}

# render_registry_conf HOST:PORT STORAGE_DIR
render_registry_conf() {
    cat <<EOF
# Written by mlflow-ci .ci/setup-engine.sh (Debian's docker-registry, distribution 2.8).
version: 0.1
log:
  level: warn
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $2
  delete:
    enabled: true
http:
  addr: $1
  headers:
    X-Content-Type-Options: [nosniff]
EOF
}

# base_recipe -> a fingerprint of everything that goes into the base image; stored as a label so
# a changed recipe (or a changed host CA bundle) rebuilds the image.
base_recipe() {
    local ca_sum=none
    [[ -r "$HOST_CA_BUNDLE" ]] && ca_sum=$(sha256sum "$HOST_CA_BUNDLE" | cut -c1-16)
    printf '%s\n' "v2 $SUITE $BASE_PACKAGES ca=$ca_sum ${IMAGE_ENV[*]}" | sha256sum | cut -c1-16
}

# booted_since RECORDED_FILE CURRENT_BOOT_ID -> 0 if RECORDED_FILE holds another boot's id.
booted_since() {
    [[ -f "$1" ]] && [[ "$(cat "$1")" != "$2" ]]
}

# --- side effects ---------------------------------------------------------------------------

# write_if_changed PATH < content; returns 0 if it wrote, 1 if the file was already identical.
write_if_changed() {
    local path=$1 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f "$path" ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        return 1
    fi
    mkdir -p "$(dirname "$path")"
    install -m 0644 "$tmp" "$path"
    rm -f "$tmp"
    return 0
}

wait_for() { # wait_for SECONDS CMD... : poll CMD every 0.2 s
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

engine_answers() {
    [[ -S "$SOCKET" ]] && curl -sf --max-time 3 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1
}

registry_answers() {
    curl -sf --max-time 3 "http://$REGISTRY_ADDR/v2/" >/dev/null 2>&1
}

ensure_packages() {
    local missing=() p
    for p in "${HOST_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "packages: all present (${HOST_PACKAGES[*]})"
        return
    fi
    log "packages: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends: recommends would add buildah, slirp4netns, fuse-overlayfs, uidmap,
    # dbus-user-session... none of which a rootful engine on overlayfs needs.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    log "packages: installed"
}

write_configs() {
    local hard_nofile hard_nproc nofile nproc
    hard_nofile=$(ulimit -Hn)
    hard_nproc=$(ulimit -Hu)
    nofile=$(clamp_limit "$hard_nofile" 1048576)
    nproc=$(clamp_limit "$hard_nproc" 4096)
    CONFIG_CHANGED=0
    if render_containers_conf "$nofile" "$nproc" | write_if_changed "$CONTAINERS_CONF"; then
        log "config: wrote $CONTAINERS_CONF (nofile=$nofile nproc=$nproc)"
        CONFIG_CHANGED=1
    fi
    if render_registries_conf "$REGISTRY_ADDR" | write_if_changed "$REGISTRIES_CONF"; then
        log "config: wrote $REGISTRIES_CONF"
        CONFIG_CHANGED=1
    fi
    if render_registry_conf "$REGISTRY_ADDR" "$REGISTRY_DIR" | write_if_changed "$REGISTRY_CONF"; then
        log "config: wrote $REGISTRY_CONF"
        REGISTRY_CONFIG_CHANGED=1
    fi
    ((CONFIG_CHANGED)) || log "config: unchanged"
}

# stop_ours NAME PIDFILE PATTERN [WHY]: stop a server this script started (pid file + cmdline check).
stop_ours() {
    local name=$1 pidfile=$2 pattern=$3 why=${4:-its configuration changed} pid
    [[ -f "$pidfile" ]] || return 0
    pid=$(cat "$pidfile")
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' </proc/"$pid"/cmdline | grep -q -- "$pattern"; then
        log "$name: stopping pid $pid ($why)"
        kill "$pid"
        wait_for 15 bash -c "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" || true
    fi
    rm -f "$pidfile"
}

# cwd_gone PIDFILE: the server this script started runs in a folder since deleted (an older
# script started it from a clone that is gone).  conmon, which podman starts in that folder,
# then fails every container start ("Failed to get working directory", "write child: broken pipe").
cwd_gone() {
    local pidfile=$1 cwd
    [[ -f "$pidfile" ]] || return 1
    cwd=$(readlink "/proc/$(cat "$pidfile")/cwd" 2>/dev/null) || return 1
    [[ "$cwd" == *" (deleted)" ]]
}

# start_daemon LOG CMD...: CMD detached in its own session, in / (never in the caller's folder,
# which may be a clone deleted later); its pid in $!.
start_daemon() {
    local log=$1
    shift
    (cd / && exec setsid "$@" >>"$log" 2>&1 </dev/null 9>&-) &
}

start_engine() {
    local pidfile=$RUN_DIR/podman.pid
    if engine_answers && cwd_gone "$pidfile"; then
        stop_ours "podman service" "$pidfile" "system service" "its working folder was deleted"
    fi
    if engine_answers && ((CONFIG_CHANGED)); then
        if [[ -f "$pidfile" ]]; then
            stop_ours "podman service" "$pidfile" "system service"
        else
            warn "podman configuration changed, but the service on $SOCKET was not started by this script: restart it yourself"
        fi
    fi
    if engine_answers; then
        log "engine: podman Docker API answers on $SOCKET"
        return
    fi
    mkdir -p "$(dirname "$SOCKET")" "$LOG_DIR" "$RUN_DIR"
    # A socket file left by a dead service (e.g. after a machine restart) blocks the bind.
    [[ -e "$SOCKET" ]] && rm -f "$SOCKET"
    local boot_id
    boot_id=$(cat "$BOOT_ID_FILE")
    # /run is not a tmpfs here: after a restart podman would find its "alive" marker and the
    # states of containers that died with the machine, skip its post-boot refresh and trust
    # them.  Clear that state, as a reboot clears it elsewhere -- only when no podman runs.
    if booted_since "$RUN_DIR/boot-id" "$boot_id" && ! pgrep -x podman >/dev/null && ! pgrep -x conmon >/dev/null; then
        log "engine: the machine restarted since the service last ran: clearing ${PODMAN_STATE_DIRS[*]}"
        rm -rf "${PODMAN_STATE_DIRS[@]}"
    fi
    log "engine: starting podman system service on unix://$SOCKET (log $LOG_DIR/podman-service.log)"
    start_daemon "$LOG_DIR/podman-service.log" podman system service --time=0 "unix://$SOCKET"
    echo $! >"$pidfile"
    wait_for 30 engine_answers || {
        tail -n 20 "$LOG_DIR/podman-service.log" >&2 || true
        die "podman system service did not answer on $SOCKET within 30 s (log above)"
    }
    printf '%s\n' "$boot_id" >"$RUN_DIR/boot-id"
    log "engine: answering (pid $(cat "$pidfile"))"
}

start_registry() {
    local pidfile=$RUN_DIR/registry.pid
    if registry_answers && cwd_gone "$pidfile"; then
        stop_ours "registry" "$pidfile" "docker-registry serve" "its working folder was deleted"
    fi
    if registry_answers && ((${REGISTRY_CONFIG_CHANGED:-0})); then
        stop_ours "registry" "$pidfile" "docker-registry serve"
    fi
    if registry_answers; then
        log "registry: answers on http://$REGISTRY_ADDR/v2/"
        return
    fi
    mkdir -p "$REGISTRY_DIR" "$LOG_DIR" "$RUN_DIR"
    log "registry: starting docker-registry on $REGISTRY_ADDR (storage $REGISTRY_DIR, log $LOG_DIR/registry.log)"
    start_daemon "$LOG_DIR/registry.log" docker-registry serve "$REGISTRY_CONF"
    echo $! >"$pidfile"
    wait_for 20 registry_answers || {
        tail -n 20 "$LOG_DIR/registry.log" >&2 || true
        die "docker-registry did not answer on http://$REGISTRY_ADDR/v2/ within 20 s (is the port taken?)"
    }
    log "registry: answering (pid $(cat "$pidfile"))"
}

image_recipe() { # image_recipe REF -> the recipe label, or nothing if the image is missing
    podman image inspect --format '{{index .Labels "io.mlflow-ci.base-recipe"}}' "$1" 2>/dev/null || true
}

build_base_image() {
    local recipe=$1 primary=$2 work tarball
    work=$(mktemp -d /var/tmp/mlflow-ci-base.XXXXXX)
    tarball=$work/rootfs.tar
    log "base image: mmdebstrap --variant=minbase $SUITE ($BASE_PACKAGES); about a minute"
    # Mirrors are explicit, so the image's sources.list is exactly these three, and stdin is
    # /dev/null (mmdebstrap reads sources from stdin in some invocations; CI has none).
    # Valid-Until/Date checks are off as on the host, whose package mirror serves a dated
    # snapshot.  The hooks run with $1 = the new root.
    # shellcheck disable=SC2016
    mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" \
        --aptopt='Acquire::Check-Valid-Until "false"' \
        --aptopt='Acquire::Check-Date "false"' \
        --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
        --customize-hook='mkdir -p "$1/usr/local/share/mlflow-ci"' \
        --customize-hook="cp $HOST_CA_BUNDLE \"\$1$IMAGE_CA_PATH\"" \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        "$SUITE" "$tarball" \
        "deb http://deb.debian.org/debian $SUITE main" \
        "deb http://deb.debian.org/debian $SUITE-updates main" \
        "deb http://deb.debian.org/debian-security $SUITE-security main" </dev/null
    log "base image: podman import as $primary"
    local changes=() e
    for e in "${IMAGE_ENV[@]}"; do changes+=(--change "ENV $e"); done
    podman import --quiet "${changes[@]}" \
        --change "LABEL io.mlflow-ci.base-recipe=$recipe" \
        --change 'CMD ["python3"]' \
        --message "mlflow-ci base image: Debian $SUITE minbase + python3" \
        "$tarball" "$primary" >/dev/null
    rm -rf "$work"
}

ensure_base_images() {
    local wanted versions v tag recipe primary="" need_build=0 tags=() skipped=()
    wanted=${MLFLOW_CI_BASE_PYTHONS:-$(host_pythons | sort -uV | tr '\n' ' ')}
    # shellcheck disable=SC2086 # a space-separated list
    versions=$(python_versions "$IMAGE_PY" $wanted)
    for v in $wanted; do
        grep -qxF -- "$v" <<<"$versions" || skipped+=("$v")
    done
    ((${#skipped[@]} == 0)) ||
        log "base image: no tag for Python ${skipped[*]} (the image's Python is $IMAGE_PY; such models need another base)"
    for v in $versions; do
        tags+=("docker.io/library/python:$v-slim")
    done
    recipe=$(base_recipe)
    for tag in "${tags[@]}"; do
        if [[ "$(image_recipe "$tag")" == "$recipe" ]]; then
            primary=$tag
            break
        fi
    done
    if [[ -z "$primary" ]]; then
        primary=${tags[0]}
        local t0=$SECONDS
        build_base_image "$recipe" "$primary"
        log "base image: built in $((SECONDS - t0)) s"
        need_build=1
    fi
    for tag in "${tags[@]}"; do
        if [[ "$(image_recipe "$tag")" != "$recipe" ]]; then
            podman tag "$primary" "$tag"
            log "base image: tagged $tag"
        fi
    done
    ((need_build)) || log "base image: present (${tags[*]#docker.io/library/})"
}

print_env() {
    cat <<EOF

Container engine ready. Use:
export DOCKER_HOST=unix://$SOCKET
export MLFLOW_CI_REGISTRY=${REGISTRY_ADDR/127.0.0.1/localhost}
EOF
}

check_only() {
    local ok=0
    if engine_answers; then echo "engine: answers on $SOCKET"; else echo "engine: no answer on $SOCKET"; ok=1; fi
    if registry_answers; then echo "registry: answers on $REGISTRY_ADDR"; else echo "registry: no answer on $REGISTRY_ADDR"; ok=1; fi
    return "$ok"
}

main() {
    case "${1:-}" in
        --check)
            check_only
            return
            ;;
        "") ;;
        *) die "usage: $0 [--check]" ;;
    esac
    ((EUID == 0)) || die "run as root (podman runs rootful here; the script writes /etc/containers)"
    mkdir -p "$RUN_DIR"
    # Two runs at once (parallel jobs) would both start a service: the second waits here.
    exec 9>"$RUN_DIR/setup.lock"
    flock -w 900 9 || die "another setup-engine.sh held $RUN_DIR/setup.lock for 15 minutes"
    CONFIG_CHANGED=0
    REGISTRY_CONFIG_CHANGED=0
    ensure_packages
    write_configs
    start_engine
    ensure_base_images
    start_registry
    log "done"
    print_env
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
