# Network namespaces joined by emulated links (`agora link-emulator`), for scripts/wan, scripts/mpi-hosts and
# scripts/bench-uploads. Source it, then:
#   links_up PREFIX WORK SECONDS NAME=ADDRESS,RATE,RTT_MS,LOSS_% …   one namespace PREFIX-NAME per link, its
#                                                                     interface eth0 at ADDRESS/24
#   links_down PREFIX                                                 kills what runs in PREFIX-*, removes them,
#                                                                     stops the emulator
# The caller traps EXIT (and INT/TERM) to links_down. Needs root, iproute2 and /dev/net/tun.

links_emulator_pid=""

# stop_pid PID: SIGTERM, then SIGKILL after 10 s.
stop_pid() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done
  kill -KILL "$1" 2>/dev/null || true
}

links_check() {
  [ "$(id -u)" -eq 0 ] || { echo "$1: needs root (network namespaces, TUN interfaces)" >&2; exit 2; }
  command -v ip >/dev/null || { echo "$1: needs iproute2 (ip): apt-get install -y iproute2" >&2; exit 2; }
  [ -c /dev/net/tun ] || { echo "$1: needs /dev/net/tun (the link emulator's interfaces)" >&2; exit 2; }
}

links_up() {
  local prefix=$1 work=$2 seconds=$3; shift 3
  local specs=() names=() addrs=() spec
  for spec in "$@"; do
    specs+=(--link "$spec")
    names+=("${spec%%=*}")
    local rest=${spec#*=}
    addrs+=("${rest%%,*}")
  done
  mkdir -p "$work/logs"
  rm -f "$work/interfaces"
  "$AGORA" link-emulator "${specs[@]}" --prefix "$prefix" --ready "$work/interfaces" --seconds "$seconds" > "$work/logs/link-emulator.log" 2>&1 &
  links_emulator_pid=$!
  for _ in $(seq 1 100); do [ -f "$work/interfaces" ] && break; kill -0 "$links_emulator_pid" 2>/dev/null || break; sleep 0.1; done
  [ -f "$work/interfaces" ] || { cat "$work/logs/link-emulator.log" >&2; echo "the link emulator did not start" >&2; return 1; }
  local ifaces
  mapfile -t ifaces < "$work/interfaces"
  local k
  for k in "${!names[@]}"; do
    local ns=$prefix-${names[$k]}
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link set "${ifaces[$k]}" netns "$ns"
    ip -n "$ns" link set "${ifaces[$k]}" name eth0
    ip -n "$ns" addr add "${addrs[$k]}/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
}

links_down() {
  local prefix=$1 ns pid
  for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix-" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  stop_pid "$links_emulator_pid"
  links_emulator_pid=""
}
