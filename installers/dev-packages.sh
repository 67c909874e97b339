# System packages for building and testing Flotilla from source (Debian/Ubuntu), sourced by
# `./up` and `tests/run`: queue what is missing with `need_cmd`/`need_lib`, then
# `install_queued` installs it all with one apt-get (through sudo when not root).

flotilla_missing=()

# need_cmd COMMAND PACKAGE: queue PACKAGE when COMMAND is not on the PATH.
need_cmd() {
  command -v "$1" >/dev/null 2>&1 || flotilla_missing+=("$2")
}

# need_lib SONAME PACKAGE: queue PACKAGE when the dynamic linker does not know SONAME. grep reads
# all of ldconfig's output: with -q, an early exit could fail the pipeline (pipefail) on SIGPIPE.
need_lib() {
  /sbin/ldconfig -p | grep "$1" >/dev/null || flotilla_missing+=("$2")
}

# need_pkg PKG-CONFIG-NAME PACKAGE: queue PACKAGE when pkg-config does not know the library (a
# -dev package: headers and .pc file).
need_pkg() {
  command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$1" || flotilla_missing+=("$2")
}

# need_file PATH PACKAGE: queue PACKAGE when PATH does not exist (data files, keyrings).
need_file() {
  [ -e "$1" ] || flotilla_missing+=("$2")
}

# What building the desktop app (src-tauri/, Tauri on WebKitGTK) needs.
need_desktop_build() {
  need_cmd pkg-config pkg-config
  need_pkg webkit2gtk-4.1 libwebkit2gtk-4.1-dev
  need_pkg ayatana-appindicator3-0.1 libayatana-appindicator3-dev
  need_pkg librsvg-2.0 librsvg2-dev
  need_pkg openssl libssl-dev
  need_lib "libxdo.so " libxdo-dev
}

# Node.js and npm build the dashboard (ui/), which the head embeds.
need_node() {
  need_cmd node nodejs
  need_cmd npm npm
}

install_queued() {
  ((${#flotilla_missing[@]})) || return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing ${flotilla_missing[*]}: install them with this system's package manager" >&2
    return 1
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "Installing ${flotilla_missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${flotilla_missing[@]}"
  flotilla_missing=()
}

# The dashboard's build tools (Vite 5) need Node.js 18.18 or newer (Debian 12 ships 18.19).
check_node_version() {
  local v
  v=$(node -p 'process.versions.node' 2>/dev/null) || v=0
  local major=${v%%.*} rest=${v#*.}
  local minor=${rest%%.*}
  if ((major < 18 || (major == 18 && minor < 18))); then
    echo "error: Node.js $v is too old to build the dashboard: it needs 18.18 or newer" >&2
    echo "  (install a newer one, e.g. from https://nodejs.org or with nvm," >&2
    echo "  or build the dashboard elsewhere and set FLOTILLA_UI_DIST to its dist directory)" >&2
    return 1
  fi
}
