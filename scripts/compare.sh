#!/usr/bin/env bash
# Stria side by side with what people would otherwise pick, on this machine,
# in one run: a local directory (native), a go-fuse loopback mount of it
# (passthrough off, 1 MiB max_write), Stria (stria up, 4 OSTs, 4-stripe
# large files), MooseFS 3 (1 master, 4 chunkservers, goal 1, trash time 0),
# GlusterFS 10 (distributed volume of 4 bricks) and SeaweedFS (weed server +
# weed mount).
#
# Every system is set up on the same disk (WORK, default
# /var/tmp/stria-compare) and again on a tmpfs the script mounts (to take
# the disk out), measured, torn down. Each round runs every system once, in
# an order rotated from round to round; the report gives the median of the
# rounds. Workloads, each measured with the same tool on every system:
#   fio:     1 MiB sequential write ending with fsync, its cold read (caches
#            dropped), 4 KiB cold random read (2 jobs);
#   mdbench: (tests/compare/mdbench) empty files (create, stat, read,
#            unlink; 2 workers, one directory each), the mdtest "hard" shape
#            (one shared directory, 3,901-byte files), 4 KiB files, and the
#            IOR "hard" shape (2 writers, 47,008-byte records strided into
#            one shared file, fsync, verified read back through a second
#            mount where the system has one).
# Before each timed step: sync, drop caches, touch ~4 GiB of memory (this VM
# returns idle memory to the host; see FACTS.md).
#
# Output: results/compare-<timestamp>/ (not committed): results.md (medians
# and the ratios Stria ÷ each system), rounds.md (every figure),
# results.json, chart-<pass>.png, raw/ (fio and mdbench JSON), logs/.
#
# Needs root, /dev/fuse, Go, and Debian's apt for fio, MooseFS, GlusterFS,
# gnuplot. Only loopback and the network namespace the script creates
# (10.231.0.0/24, MooseFS) are used. Everything started is stopped by PID
# and everything mounted is unmounted, also on failure or Ctrl-C.
#
# Usage: scripts/compare.sh [--quick] [--rounds N] [--systems a,b,c]
#            [--passes disk,tmpfs] [--work DIR] [--size MiB] [--files N]
#            [--ior-records N] [--no-install]
#   --rounds N        rounds per pass (default 5; --quick: 1)
#   --quick           a smoke run: 1 round, 256 MiB, 300 files per worker,
#                     200 IOR records per writer (~7 min)
#   --systems LIST    any of native,loopback,stria,moosefs,glusterfs,seaweedfs
#   --passes LIST     disk, tmpfs or both (default)
#   --work DIR        where the systems keep their data (default
#                     /var/tmp/stria-compare; the tmpfs is mounted in it)
#   --size MiB        sequential file size (default 512)
#   --files N         files per worker in each file shape (default 2000)
#   --ior-records N   IOR-hard records per writer (default 1000)
#   --no-install      fail instead of installing missing packages
set -euo pipefail

ALL_SYSTEMS=native,loopback,stria,moosefs,glusterfs,seaweedfs
WEED_VERSION=v0.0.0-20261109003541-7506e5f91cd6

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit "${1:-0}"
}

rounds="" quick=0 systems=$ALL_SYSTEMS passes=disk,tmpfs work=/var/tmp/stria-compare
size_mb="" files="" records="" install=1
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	--rounds) rounds=$2; shift ;;
	--rounds=*) rounds=${1#*=} ;;
	--systems) systems=$2; shift ;;
	--systems=*) systems=${1#*=} ;;
	--passes) passes=$2; shift ;;
	--passes=*) passes=${1#*=} ;;
	--work) work=$2; shift ;;
	--work=*) work=${1#*=} ;;
	--size) size_mb=$2; shift ;;
	--size=*) size_mb=${1#*=} ;;
	--files) files=$2; shift ;;
	--files=*) files=${1#*=} ;;
	--ior-records) records=$2; shift ;;
	--ior-records=*) records=${1#*=} ;;
	--no-install) install=0 ;;
	-h | --help) usage 0 ;;
	*) echo "compare: unknown argument $1" >&2; usage 2 ;;
	esac
	shift
done
if [ "$quick" = 1 ]; then
	: "${rounds:=1}" "${size_mb:=256}" "${files:=300}" "${records:=200}"
	rr_runtime=3 rr_io_mb=16
else
	# The issue's minimum sizes (512 MiB, 2 x 2,000 files): a full run of
	# 5 rounds x 2 passes x 6 systems then takes ~45 min here, most of it
	# the settling before each of the ~21 timed steps per system.
	: "${rounds:=5}" "${size_mb:=512}" "${files:=2000}" "${records:=1000}"
	rr_runtime=5 rr_io_mb=32
fi
for n in "$rounds" "$size_mb" "$files" "$records"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "compare: not a positive number: $n" >&2; exit 2; }
done
IFS=, read -r -a SYSTEMS <<<"$systems"
for s in "${SYSTEMS[@]}"; do
	[[ ,$ALL_SYSTEMS, == *",$s,"* ]] || { echo "compare: unknown system $s (known: $ALL_SYSTEMS)" >&2; exit 2; }
done
IFS=, read -r -a PASSES <<<"$passes"
for p in "${PASSES[@]}"; do
	[[ $p == disk || $p == tmpfs ]] || { echo "compare: unknown pass $p (disk, tmpfs)" >&2; exit 2; }
done
[[ $work == /* && $work != *[[:space:]]* ]] || { echo "compare: --work must be an absolute path without spaces" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "compare: needs root (mounts, namespaces, drop_caches)" >&2; exit 1; }
[ -e /dev/fuse ] || { echo "compare: /dev/fuse is missing" >&2; exit 1; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/stria-compare
mkdir -p "$CACHE" "$work"
# One run at a time: the namespace, ports and /etc/hosts entry are fixed.
# (fd 9 is closed in every process the script starts.)
exec 9>"$work/.lock"
flock -n 9 || { echo "compare: another compare.sh holds $work/.lock" >&2; exit 1; }
STAMP=$(date +%Y%m%d-%H%M%S)
RES=$REPO/results/compare-$STAMP
RUN=$RES/logs/run # pid registry
mkdir -p "$RES/raw" "$RUN"
: >"$RUN/pids"
# Stria reads STRIA_<FLAG> from the environment: none may leak in.
for v in ${!STRIA_@}; do unset "$v"; done

log() { printf '%s compare: %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$RES/compare.log" >&2; }

# ---------------------------------------------------------------- helpers

# alive PID: the process exists and is not a zombie.
alive() {
	local st
	st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# start_bg LOG CMD...: start CMD in the background, output to LOG; its PID
# goes to LAST_PID and to the registry the final sweep stops.
start_bg() {
	local out=$1
	shift
	"$@" >"$out" 2>&1 </dev/null 9>&- &
	LAST_PID=$!
	register_pid "$LAST_PID"
}

# start_time PID: the process's start time (constant across exec), which
# with the PID names one process, never a later one that reuses the PID.
start_time() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

# register_pid PID: remember PID and its start time for the final sweep.
register_pid() {
	printf '%s\t%s\n' "$1" "$(start_time "$1")" >>"$RUN/pids"
}

# stop_pid PID [SECONDS]: SIGTERM, wait, SIGKILL if still there.
stop_pid() {
	local pid=$1 t=${2:-30} i
	if alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < t * 10; i++)); do
			alive "$pid" || break
			sleep 0.1
		done
		if alive "$pid"; then
			log "pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-80)) still running after ${t}s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
		fi
	fi
	wait "$pid" 2>/dev/null || true
}

# stop_pids SECONDS PID...: stop several processes at once.
stop_pids() {
	local t=$1 pid
	shift
	for pid in "$@"; do
		if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
	done
	for pid in "$@"; do stop_pid "$pid" "$t"; done
}

is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }

# unmount DIR: unmount, retrying while busy, detaching as a last resort.
unmount() {
	local m=$1 i
	for ((i = 0; i < 50; i++)); do
		is_mounted "$m" || return 0
		umount "$m" 2>/dev/null && continue
		sleep 0.2
	done
	if is_mounted "$m"; then
		log "unmount $m: busy, detaching"
		umount -l "$m" 2>/dev/null || true
	fi
}

# wait_for WHAT SECONDS PID CMD...: poll CMD until it succeeds; fail early
# if PID (0: none) died.
wait_for() {
	local what=$1 t=$2 pid=$3 i
	shift 3
	for ((i = 0; i < t * 5; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		if [ "$pid" != 0 ] && ! alive "$pid"; then
			log "$what: process $pid exited"
			return 1
		fi
		sleep 0.2
	done
	log "$what: not ready after ${t}s"
	return 1
}

listening() { ss -Hltn "sport = :$1" | grep -q .; } # listening PORT
ns_listening() { ip netns exec "$NS" ss -Hltn "sport = :$1" | grep -q .; }

# Cleanup actions of the system being measured, run last-in first-out.
SYS_CLEAN=()
on_teardown() { SYS_CLEAN+=("$*"); }
teardown() {
	local i t
	for ((i = ${#SYS_CLEAN[@]} - 1; i >= 0; i--)); do
		t=$SECONDS
		eval "${SYS_CLEAN[i]}" || true
		echo "$(date +%T) teardown: ${SYS_CLEAN[i]} ($((SECONDS - t))s)"
	done
	SYS_CLEAN=()
}

# ---------------------------------------------------------------- install

install_packages() {
	local need=() s
	command -v fio >/dev/null || need+=(fio)
	command -v ip >/dev/null || need+=(iproute2)
	command -v ss >/dev/null || need+=(iproute2)
	command -v gnuplot >/dev/null || need+=(gnuplot-nox)
	command -v fusermount3 >/dev/null || need+=(fuse3)
	command -v flock >/dev/null || need+=(util-linux)
	for s in "${SYSTEMS[@]}"; do
		case $s in
		moosefs)
			command -v mfsmaster >/dev/null || need+=(moosefs-master)
			command -v mfschunkserver >/dev/null || need+=(moosefs-chunkserver)
			command -v mfsmount >/dev/null || need+=(moosefs-client)
			;;
		glusterfs)
			command -v glusterd >/dev/null || need+=(glusterfs-server)
			command -v glusterfs >/dev/null || need+=(glusterfs-client)
			;;
		esac
	done
	[ ${#need[@]} -gt 0 ] || return 0
	[ "$install" = 1 ] || { log "missing packages (--no-install): ${need[*]}"; exit 1; }
	log "installing ${need[*]}"
	# Debian starts the daemons it installs unless policy-rc.d says no:
	# the peers must run only as this script starts them.
	local policy=/usr/sbin/policy-rc.d made=0
	if [ ! -e $policy ]; then
		printf '#!/bin/sh\nexit 101\n' >$policy
		chmod +x $policy
		made=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	local rc=0
	{ apt-get update -qq && apt-get install -y -qq "${need[@]}"; } >>"$RES/logs/apt.log" 2>&1 || rc=$?
	[ $made = 0 ] || rm -f $policy
	[ $rc = 0 ] || { log "apt-get failed, see $RES/logs/apt.log"; exit 1; }
}

build() {
	log "building stria and the harness programs"
	(cd "$REPO" && go build -o "$CACHE/stria" ./cmd/stria)
	(cd "$REPO/tests" && for p in mdbench loopback chart; do go build -o "$CACHE/$p" "./compare/$p"; done)
	if [[ ,$systems, == *,seaweedfs,* ]] &&
		! { [ -x "$CACHE/weed" ] && [ "$(cat "$CACHE/weed.version" 2>/dev/null)" = "$WEED_VERSION" ]; }; then
		log "building SeaweedFS $WEED_VERSION (once; cached in $CACHE/weed)"
		local dir
		dir=$(cd "$CACHE" && GOWORK=off GOFLAGS= go mod download -json "github.com/seaweedfs/seaweedfs@$WEED_VERSION" |
			sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[ -d "$dir" ] || { log "go mod download of seaweedfs gave no directory"; exit 1; }
		# Its go.mod has replace directives, so `go install` refuses it:
		# build inside a writable copy of the module.
		rm -rf "$CACHE/seaweedfs-src"
		cp -r "$dir" "$CACHE/seaweedfs-src"
		chmod -R u+w "$CACHE/seaweedfs-src"
		(cd "$CACHE/seaweedfs-src" && GOWORK=off GOFLAGS=-mod=mod go build -o "$CACHE/weed.new" ./weed) >>"$RES/logs/weed-build.log" 2>&1 ||
			{ log "SeaweedFS build failed, see $RES/logs/weed-build.log"; exit 1; }
		mv "$CACHE/weed.new" "$CACHE/weed"
		echo "$WEED_VERSION" >"$CACHE/weed.version"
	fi
}

# ---------------------------------------------------------------- systems
#
# start_<system> sets up the system under $SYSDIR, mounts it (when it is a
# mount) and sets BENCH (the directory the workloads run in) and BENCH2
# (the same directory through a second client, or empty). Every process
# and mount it makes has its teardown registered first.

NS=stria-cmp VETH_HOST=scmp0 VETH_NS=scmp1 HOST_IP=10.231.0.1 NS_IP=10.231.0.2
GLUSTER_HOST=stria-gluster
HOSTS_MARK="# added by stria scripts/compare.sh"

start_native() {
	mkdir -p "$SYSDIR/dir/bench/big"
	BENCH=$SYSDIR/dir/bench BENCH2=""
}

start_loopback() {
	local src=$SYSDIR/src m
	mkdir -p "$src/bench/big" "$MNT" "$MNT2"
	for m in "$MNT" "$MNT2"; do
		on_teardown unmount "$m"
		start_bg "$LOGDIR/loopback-$(basename "$m").log" "$CACHE/loopback" "$src" "$m"
		on_teardown stop_pid "$LAST_PID" 30
		wait_for "loopback at $m" 30 "$LAST_PID" grep -qx ready "$LOGDIR/loopback-$(basename "$m").log"
	done
	BENCH=$MNT/bench BENCH2=$MNT2/bench
}

start_stria() {
	mkdir -p "$SYSDIR/data" "$MNT" "$MNT2"
	on_teardown unmount "$MNT"
	start_bg "$LOGDIR/stria-up.log" "$CACHE/stria" up --data "$SYSDIR/data" --mount "$MNT" --osts 4
	local up=$LAST_PID
	on_teardown stop_pid "$up" 90
	wait_for "stria up" 120 "$up" grep -q '^stria: ready' "$LOGDIR/stria-up.log"
	local nats etcd
	nats=$(sed -n 's/^ *nats: *//p' "$LOGDIR/stria-up.log" | head -1)
	etcd=$(sed -n 's/^ *etcd: *//p' "$LOGDIR/stria-up.log" | head -1)
	# A second client of the same file system, for the IOR-hard read-back.
	on_teardown unmount "$MNT2"
	start_bg "$LOGDIR/stria-mount2.log" "$CACHE/stria" mount --nats "$nats" --etcd "$etcd" --log-level warn "$MNT2"
	on_teardown stop_pid "$LAST_PID" 60
	wait_for "stria mount (second client)" 60 "$LAST_PID" is_mounted "$MNT2"
	mkdir -p "$MNT/bench/big"
	# Small files keep their data on meta (Data-on-MDT), as a Lustre
	# administrator sets it for a small-file tree; large files stripe 4 ways.
	"$CACHE/stria" setstripe -c 1 -S 1M --dom 64K "$MNT/bench"
	"$CACHE/stria" setstripe -c 4 -S 1M "$MNT/bench/big"
	"$CACHE/stria" getstripe "$MNT/bench/big" >"$LOGDIR/getstripe.txt" 2>&1 || true
	BENCH=$MNT/bench BENCH2=$MNT2/bench
}

netns_up() {
	if ip -4 -o addr show | grep -q " ${HOST_IP%.*}\."; then
		log "10.231.0.0/24 is already in use on this host"
		return 1
	fi
	on_teardown netns_down
	ip netns add "$NS"
	ip link add "$VETH_HOST" mtu 65535 type veth peer name "$VETH_NS" mtu 65535
	ip link set "$VETH_NS" netns "$NS"
	ip addr add "$HOST_IP/24" dev "$VETH_HOST"
	ip link set "$VETH_HOST" up
	ip netns exec "$NS" ip addr add "$NS_IP/24" dev "$VETH_NS"
	ip netns exec "$NS" ip link set "$VETH_NS" up
	ip netns exec "$NS" ip link set lo up
}

netns_down() {
	ip link del "$VETH_HOST" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
}

start_moosefs() {
	local d=$SYSDIR i
	mkdir -p "$d/etc" "$d/master" "$MNT" "$MNT2"
	cp /var/lib/mfs/metadata.mfs.empty "$d/master/metadata.mfs"
	echo "* / rw,alldirs,admin,maproot=0:0" >"$d/etc/mfsexports.cfg"
	: >"$d/etc/mfstopology.cfg"
	# Debian's defaults but for: root instead of the mfs user (the state
	# is in our work dir), no raised priority (the others have none), and
	# listening only on the namespace's address.
	cat >"$d/etc/mfsmaster.cfg" <<-EOF
		WORKING_USER = root
		WORKING_GROUP = root
		SYSLOG_IDENT = mfsmaster-cmp
		NICE_LEVEL = 0
		DATA_PATH = $d/master
		EXPORTS_FILENAME = $d/etc/mfsexports.cfg
		TOPOLOGY_FILENAME = $d/etc/mfstopology.cfg
		MATOML_LISTEN_HOST = $NS_IP
		MATOCS_LISTEN_HOST = $NS_IP
		MATOCL_LISTEN_HOST = $NS_IP
	EOF
	for i in 0 1 2 3; do
		mkdir -p "$d/cs$i/data" "$d/cs$i/chunks"
		echo "$d/cs$i/chunks" >"$d/etc/mfshdd$i.cfg"
		cat >"$d/etc/mfschunkserver$i.cfg" <<-EOF
			WORKING_USER = root
			WORKING_GROUP = root
			SYSLOG_IDENT = mfschunkserver-cmp$i
			NICE_LEVEL = 0
			DATA_PATH = $d/cs$i/data
			HDD_CONF_FILENAME = $d/etc/mfshdd$i.cfg
			BIND_HOST = $NS_IP
			MASTER_HOST = $NS_IP
			CSSERV_LISTEN_HOST = $NS_IP
			CSSERV_LISTEN_PORT = $((9422 + i))
		EOF
	done
	# MooseFS refuses chunkservers on 127.x: master and chunkservers live
	# in a namespace of ours behind a veth pair, the client stays here.
	netns_up
	start_bg "$LOGDIR/mfsmaster.log" ip netns exec "$NS" mfsmaster -f -c "$d/etc/mfsmaster.cfg" start
	on_teardown stop_pid "$LAST_PID" 60
	wait_for "mfsmaster" 60 "$LAST_PID" ns_listening 9421
	local cs=()
	for i in 0 1 2 3; do
		start_bg "$LOGDIR/mfschunkserver$i.log" ip netns exec "$NS" mfschunkserver -f -c "$d/etc/mfschunkserver$i.cfg" start
		cs+=("$LAST_PID")
	done
	on_teardown stop_pids 60 "${cs[@]}"
	for i in 0 1 2 3; do
		wait_for "mfschunkserver $i" 60 0 ns_listening $((9422 + i))
	done
	local m
	for m in "$MNT" "$MNT2"; do
		on_teardown unmount "$m"
		start_bg "$LOGDIR/mfsmount-$(basename "$m").log" mfsmount -f "$m" -H "$NS_IP" -P 9421
		on_teardown stop_pid "$LAST_PID" 30
		wait_for "mfsmount at $m" 30 "$LAST_PID" is_mounted "$m"
	done
	# All four chunkservers registered: the mount's free space is the sum
	# of theirs (all four on the same file system here).
	local under
	under=$(stat -f -c '%a*%S' "$d")
	wait_for "4 MooseFS chunkservers registered" 60 0 moosefs_sized "$MNT" "$((under))"
	mfssettrashtime -r 0 "$MNT" >"$LOGDIR/mfssettrashtime.log" 2>&1
	mfssetgoal -r 1 "$MNT" >"$LOGDIR/mfssetgoal.log" 2>&1
	mkdir -p "$MNT/bench/big"
	BENCH=$MNT/bench BENCH2=$MNT2/bench
}

moosefs_sized() { # MNT UNDERLYING_BYTES
	local total
	total=$(stat -f -c '%a*%S' "$1") || return 1
	[ $((total)) -ge $(($2 * 7 / 2)) ]
}

hosts_add() {
	if getent hosts "$GLUSTER_HOST" >/dev/null; then return 0; fi
	on_teardown hosts_del
	printf '127.0.0.1\t%s %s\n' "$GLUSTER_HOST" "$HOSTS_MARK" >>/etc/hosts
}

# hosts_del rewrites /etc/hosts in place (it may be a bind mount) without
# our line, leaving every other line as it is now.
hosts_del() {
	grep -qF "$HOSTS_MARK" /etc/hosts || return 0
	local keep
	keep=$(grep -vF "$HOSTS_MARK" /etc/hosts)
	printf '%s\n' "$keep" >/etc/hosts
}

start_glusterfs() {
	local d=$SYSDIR i m
	mkdir -p "$d/lib" "$d/run" "$d/log" "$d/bricks" "$MNT" "$MNT2"
	# GlusterFS refuses the literal 127.0.0.1 as a brick host: a name
	# that resolves to it.
	hosts_add
	# glusterd with its own state, run directory and CLI socket, on
	# loopback only (bricks then bind to the brick host's address too).
	cat >"$d/glusterd.vol" <<-EOF
		volume management
		    type mgmt/glusterd
		    option working-directory $d/lib
		    option run-directory $d/run
		    option glusterd-sockfile $d/run/glusterd.socket
		    option transport-type socket
		    option transport.socket.bind-address 127.0.0.1
		    option transport.socket.listen-port 24007
		    option transport.socket.keepalive-time 10
		    option transport.socket.keepalive-interval 2
		    option transport.socket.read-fail-log off
		    option ping-timeout 0
		    option event-threads 1
		    option max-port 60999
		end-volume
	EOF
	if listening 24007; then
		log "port 24007 (glusterd) is already in use"
		return 1
	fi
	start_bg "$LOGDIR/glusterd.out" glusterd -N -f "$d/glusterd.vol" -l "$d/log/glusterd.log" -p "$d/run/glusterd.pid"
	local gd=$LAST_PID
	on_teardown stop_pid "$gd" 30
	on_teardown gluster_stop_bricks "$d"
	GLUSTER=(gluster --mode=script "--glusterd-sock=$d/run/glusterd.socket")
	wait_for "glusterd" 60 "$gd" "${GLUSTER[@]}" volume list
	local bricks=()
	for i in 0 1 2 3; do bricks+=("$GLUSTER_HOST:$d/bricks/b$i"); done
	"${GLUSTER[@]}" volume create cmpvol transport tcp "${bricks[@]}" force >"$LOGDIR/volume-create.log" 2>&1 ||
		{ cat "$LOGDIR/volume-create.log" >&2; return 1; }
	"${GLUSTER[@]}" volume start cmpvol >"$LOGDIR/volume-start.log" 2>&1 ||
		{ cat "$LOGDIR/volume-start.log" >&2; return 1; }
	"${GLUSTER[@]}" volume status cmpvol >"$LOGDIR/volume-status.log" 2>&1 || true
	gluster_register_bricks "$d"
	for m in "$MNT" "$MNT2"; do
		on_teardown unmount "$m"
		start_bg "$LOGDIR/glusterfs-$(basename "$m").log" glusterfs -N --volfile-server="$GLUSTER_HOST" --volfile-id=cmpvol \
			-l "$d/log/client-$(basename "$m").log" "$m"
		on_teardown stop_pid "$LAST_PID" 30
		wait_for "glusterfs client at $m" 30 "$LAST_PID" is_mounted "$m"
		wait_for "glusterfs volume at $m" 30 "$LAST_PID" stat "$m/."
	done
	mkdir -p "$MNT/bench/big"
	BENCH=$MNT/bench BENCH2=$MNT2/bench
}

# The brick processes (glusterfsd) are glusterd's, detached: their PIDs are
# in pid files under our run directory.
gluster_brick_pids() {
	local f pid
	for f in $(find "$1/run" -name '*.pid' ! -name glusterd.pid 2>/dev/null); do
		pid=$(cat "$f" 2>/dev/null) || continue
		[[ $pid =~ ^[0-9]+$ ]] || continue
		# Only a glusterfsd serving a brick of ours.
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1/bricks" && echo "$pid"
	done
	return 0
}

gluster_register_bricks() {
	local pid
	for pid in $(gluster_brick_pids "$1"); do register_pid "$pid"; done
}

gluster_stop_bricks() {
	local d=$1 pid
	if [ -S "$d/run/glusterd.socket" ]; then
		timeout 60 gluster --mode=script "--glusterd-sock=$d/run/glusterd.socket" volume stop cmpvol force >/dev/null 2>&1 || true
	fi
	for pid in $(gluster_brick_pids "$d"); do stop_pid "$pid" 30; done
}

SWFS_MASTER=19333 SWFS_VOLUME=18081 SWFS_FILER=18888

start_seaweedfs() {
	local d=$SYSDIR p m n=0
	mkdir -p "$d/data" "$MNT" "$MNT2"
	for p in $SWFS_MASTER $SWFS_VOLUME $SWFS_FILER $((SWFS_MASTER + 10000)) $((SWFS_VOLUME + 10000)) $((SWFS_FILER + 10000)); do
		if listening "$p"; then
			log "port $p (SeaweedFS) is already in use"
			return 1
		fi
	done
	# Everything on 127.0.0.1, state in our work dir, telemetry off, no
	# 10 s wait before the volume server stops.
	start_bg "$LOGDIR/weed-server.log" env -C "$d" "$CACHE/weed" server -dir="$d/data" \
		-ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
		-master.port=$SWFS_MASTER -master.port.grpc=$((SWFS_MASTER + 10000)) \
		-volume.port=$SWFS_VOLUME -volume.port.grpc=$((SWFS_VOLUME + 10000)) \
		-filer -filer.port=$SWFS_FILER -filer.port.grpc=$((SWFS_FILER + 10000)) \
		-filer.localSocket="$d/filer.sock" -volume.preStopSeconds=0
	local srv=$LAST_PID
	on_teardown stop_pid "$srv" 60
	wait_for "weed server (filer)" 90 "$srv" listening $((SWFS_FILER + 10000))
	# One mount only. Two weed mounts writing one file lose records or
	# fail fsync with EIO (each mount flushes its own chunk list); -dlm
	# (one writing mount at a time) deadlocked two writers of one file
	# here. So SeaweedFS has no figure for the two-mount IOR-hard shape.
	m=$MNT n=1
	mkdir -p "$d/cache$n"
	on_teardown unmount "$m"
	start_bg "$LOGDIR/weed-mount.log" env -C "$d" "$CACHE/weed" mount \
		-filer=127.0.0.1:$SWFS_FILER -dir="$m" -cacheDir="$d/cache$n" -localSocket="$d/mount$n.sock"
	on_teardown stop_pid "$LAST_PID" 30
	wait_for "weed mount at $m" 60 "$LAST_PID" is_mounted "$m"
	# The first write waits for the master to grow volumes: wait until a
	# file can be written and read back.
	wait_for "SeaweedFS accepting writes" 90 "$srv" seaweed_probe "$MNT"
	mkdir -p "$MNT/bench/big"
	BENCH=$MNT/bench BENCH2=""
}

seaweed_probe() {
	echo probe >"$1/.probe" && [ "$(cat "$1/.probe")" = probe ] && rm -f "$1/.probe"
}

# ---------------------------------------------------------------- workloads

settle() { "$CACHE/mdbench" touch -drop; }

# limited SECONDS CMD...: run CMD, SIGTERM then SIGKILL it after SECONDS.
# A process stuck in a hung FUSE request survives even SIGKILL: then the
# system is torn down (which ends the request) and the round marked failed.
limited() {
	local t=$1 pid i rc
	shift
	"$@" 9>&- &
	pid=$!
	register_pid "$pid"
	for ((i = 0; i < t * 5; i++)); do
		alive "$pid" || break
		sleep 0.2
	done
	if alive "$pid"; then
		log "$1 ran over ${t}s: stopping it"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.2; done
		if alive "$pid"; then
			echo "$1 hung in the file system for over ${t}s; system torn down" >>"$OUT/errors.txt"
			exit 1
		fi
		wait "$pid" 2>/dev/null || true
		echo "$1 ran over ${t}s and was stopped" >>"$OUT/errors.txt"
		return 124
	fi
	rc=0
	wait "$pid" || rc=$?
	return $rc
}

# fio_job NAME ARGS...: one fio job on the big file, JSON to $OUT/NAME.json.
fio_job() {
	local name=$1
	shift
	settle
	if ! limited 600 fio --name="$name" --filename="$BENCH/big/fio.dat" --ioengine=psync --direct=0 \
		--fallocate=none "$@" --output-format=json --output="$OUT/$name.json" >"$OUT/$name.log" 2>&1; then
		echo "fio $name failed: $(tail -c 300 "$OUT/$name.log" | tr '\n' ' ')" >>"$OUT/errors.txt"
		return 1
	fi
}

measure() {
	local half=$((size_mb / 2))
	fio_job seqwrite --rw=write --bs=1M --size="${size_mb}M" --end_fsync=1 || true
	if [ -f "$BENCH/big/fio.dat" ]; then
		fio_job seqread --rw=read --bs=1M --size="${size_mb}M" || true
		# Each job reads its half at random, each block at most once.
		fio_job randread --rw=randread --bs=4k --numjobs=2 --size="${half}M" --offset_increment="${half}M" \
			--io_size="${rr_io_mb}M" --runtime="$rr_runtime" --group_reporting || true
		rm -f "$BENCH/big/fio.dat"
	fi
	local dir2=()
	[ -z "$BENCH2" ] || dir2=(-dir2 "$BENCH2")
	if ! limited 1800 "$CACHE/mdbench" run -dir "$BENCH" "${dir2[@]}" -workers 2 -files "$files" \
		-ior-records "$records" >"$OUT/md.json" 2>"$OUT/md.log"; then
		echo "mdbench: $(tail -c 400 "$OUT/md.log" | tr '\n' ' ')" >>"$OUT/errors.txt"
	fi
}

# one PASS ROUND SYSTEM: set up, measure, tear down, in a subshell whose
# EXIT trap tears down whatever was set up.
one() {
	local pass=$1 round=$2 sys=$3
	SYSDIR=$PASSDIR/$sys MNT=$PASSDIR/$sys/mnt MNT2=$PASSDIR/$sys/mnt2
	OUT=$RES/raw/$pass/$sys/r$round LOGDIR=$RES/logs/$pass/r$round/$sys
	mkdir -p "$OUT" "$LOGDIR"
	rm -rf "$SYSDIR"
	mkdir -p "$SYSDIR"
	local t0=$SECONDS rc=0
	set +e
	(
		set -e
		phase=setup
		# shellcheck disable=SC2317 # called by the trap
		leave() {
			if [ "$phase" = setup ]; then
				echo "set-up failed: $(tail -c 400 "$LOGDIR/setup.log" | tr '\n' ' ')" >>"$OUT/errors.txt"
			fi
			local t1=$SECONDS
			teardown >>"$LOGDIR/teardown.log" 2>&1
			log "$pass r$round $sys: torn down in $((SECONDS - t1))s"
		}
		trap leave EXIT
		trap 'exit 143' TERM
		trap 'exit 130' INT
		log "$pass r$round $sys: starting"
		# Not in a condition: `set -e` must stop the set-up at its
		# first failing step.
		"start_$sys" >>"$LOGDIR/setup.log" 2>&1
		phase=measure
		log "$pass r$round $sys: up after $((SECONDS - t0))s, measuring"
		measure
	) &
	CHILD=$!
	wait $CHILD
	rc=$?
	CHILD=""
	set -e
	[ $rc = 0 ] || log "$pass r$round $sys: failed (rc $rc), see $LOGDIR"
	[ ! -s "$OUT/errors.txt" ] || log "$pass r$round $sys: $(head -c 300 "$OUT/errors.txt")"
	log "$pass r$round $sys: done in $((SECONDS - t0))s"
	rm -rf "$SYSDIR"
}

# ---------------------------------------------------------------- main

CHILD="" TMPFS=""
# sweep_mounts unmounts what is still mounted under the work dir (ours:
# we hold its lock), deepest first, but the tmpfs of the running pass.
sweep_mounts() {
	local m
	for m in $(awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
		[ "$m" = "$TMPFS" ] && continue
		log "sweep: unmounting $m"
		unmount "$m"
	done
}
final_sweep() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [ -n "$CHILD" ]; then
		kill -TERM "$CHILD" 2>/dev/null
		wait "$CHILD" 2>/dev/null
	fi
	# Whatever a killed subshell left behind: its processes (by PID, if
	# the PID still runs the same command), mounts, namespace, hosts line.
	local pid st
	while IFS=$'\t' read -r pid st; do
		alive "$pid" || continue
		[ -n "$st" ] && [ "$(start_time "$pid")" = "$st" ] || continue
		log "sweep: stopping leftover pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-100))"
		stop_pid "$pid" 20
	done <"$RUN/pids"
	sweep_mounts
	if ip netns list 2>/dev/null | grep -qw "$NS"; then netns_down; fi
	hosts_del
	if [ -n "$TMPFS" ] && is_mounted "$TMPFS"; then
		umount "$TMPFS" || umount -l "$TMPFS"
	fi
	exit $rc
}
trap final_sweep EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

install_packages
build
# A crashed earlier run may have left mounts, our namespace, our hosts line.
sweep_mounts
if ip netns list 2>/dev/null | grep -qw "$NS"; then netns_down; fi
hosts_del

{
	echo "date: $(date -Is)"
	echo "host: $(uname -srm), $(nproc) CPUs, $(free -g | awk '/^Mem/ { print $2 }') GiB"
	echo "stria: $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO" && git diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
	echo "fio: $(fio --version)"
	echo "moosefs: $(dpkg-query -W -f '${Version}' moosefs-master 2>/dev/null)"
	echo "glusterfs: $(dpkg-query -W -f '${Version}' glusterfs-server 2>/dev/null)"
	echo "seaweedfs: $WEED_VERSION ($("$CACHE/weed" version 2>/dev/null | head -1))"
	echo "rounds: $rounds; systems: $systems; passes: $passes; work: $work"
	echo "sizes: seq ${size_mb} MiB; random read ${rr_io_mb} MiB or ${rr_runtime}s per job; $files files per worker; $records IOR records per writer"
} >"$RES/env.txt"
log "results in $RES"
start_all=$SECONDS

for pass in "${PASSES[@]}"; do
	if [ "$pass" = tmpfs ]; then
		TMPFS=$work/tmpfs
		mkdir -p "$TMPFS"
		is_mounted "$TMPFS" && umount "$TMPFS"
		mount -t tmpfs -o size=12g,mode=0755 stria-compare "$TMPFS"
		PASSDIR=$TMPFS
	else
		PASSDIR=$work/disk
		mkdir -p "$PASSDIR"
	fi
	for ((r = 1; r <= rounds; r++)); do
		# Rotate the order every round: the shared machine drifts.
		n=${#SYSTEMS[@]}
		for ((k = 0; k < n; k++)); do
			one "$pass" "$r" "${SYSTEMS[$(((k + r - 1) % n))]}"
		done
	done
	if [ "$pass" = tmpfs ]; then
		umount "$TMPFS"
		TMPFS=""
	fi
done
log "all rounds done in $(((SECONDS - start_all) / 60)) min"

cat >"$RES/notes.md" <<'EOF'
## How each system was run

- **native**: a plain directory on the pass's file system.
- **go-fuse loopback**: `tests/compare/loopback` (go-fuse v2.12.1, the mount
  options of `tests/bench_test.go`: 1 MiB max_write, splice off, FUSE
  passthrough off, 1 s entry/attribute timeouts); a second loopback mount of
  the same directory serves the two-mount IOR shape.
- **Stria**: `stria up --osts 4` on the pass's file system, the benchmark
  directory set to `stria setstripe -c 1 -S 1M --dom 64K` (each file's first
  64 KiB on meta: Data-on-MDT, as for a Lustre small-file tree) and the
  directory of the large-file workloads to `stria setstripe -c 4 -S 1M`; a
  second client is `stria mount` against the same NATS and etcd.
- **MooseFS 3**: 1 master and 4 chunkservers (Debian defaults but root user,
  nice 0), goal 1 and trash time 0 set on the root. MooseFS refuses
  chunkservers on 127.x, so master and chunkservers run in a network
  namespace of the harness behind a veth pair (10.231.0.2, MTU 65535);
  `mfsmount` (two of them) runs in the root namespace. Chunkservers do not
  fsync by default (`HDD_FSYNC_BEFORE_CLOSE = 0`).
- **GlusterFS 10**: `glusterd` with its own working and run directories, on
  127.0.0.1; a distributed volume of 4 bricks on host `stria-gluster` (an
  `/etc/hosts` alias of 127.0.0.1 the harness adds and removes: the literal
  127.0.0.1 is refused), created with `force`; two `glusterfs` FUSE clients.
- **SeaweedFS**: `weed server` (master, volume, filer on 127.0.0.1, telemetry
  off) and one `weed mount`, default options (no fsync on the volume
  server). It has no two-mount IOR figure: two mounts writing one file lose
  records or fail `fsync` with EIO, and `weed mount -dlm` deadlocked two
  writers of one file here.

Every timed step starts after `sync`, dropping the page cache and touching
4 GiB of memory. fio: `ioengine=psync`, buffered, `fallocate=none`; the
sequential write's figure includes its final fsync. mdbench: 2 workers;
each figure is operations (or bytes) over the wall time of the phase.
EOF
note="$(sed 's/$/  /' "$RES/env.txt")"
"$CACHE/chart" -dir "$RES" -systems "$systems" -note "$note" -notes "$RES/notes.md" >/dev/null
log "report: $RES/results.md"
for p in "${PASSES[@]}"; do [ ! -f "$RES/chart-$p.png" ] || log "chart: $RES/chart-$p.png"; done
cat "$RES/results.md"
