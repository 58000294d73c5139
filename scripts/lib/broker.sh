# Helpers shared by scripts/*-start and scripts/stop. Source it; it defines functions only.

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# need TOOL PACKAGE: fail with what to install when TOOL is not on PATH.
need() {
    command -v "$1" >/dev/null ||
        die "$1 not found; install the Debian package $2 (scripts/setup installs it)"
}

# free_ports N: print N distinct TCP ports that were free a moment ago, one per line.
# The kernel picks them (bind to port 0); a caller must still retry if one got taken since.
free_ports() {
    need python3 python3
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
}

# accepts PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# alive PID: true while PID runs (a zombie, exited but not yet reaped, counts as gone).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# check_dir DIR: the env files are plain KEY=value lines, so paths must not need quoting.
check_dir() {
    case "$1" in
    *[[:space:]\'\"\\\$]*) die "directory path must not contain spaces or quotes: $1" ;;
    esac
}
