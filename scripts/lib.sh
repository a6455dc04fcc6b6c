# Shared helpers for leasehold's scripts (sourced, not run).

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
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "redis-server is missing and this user cannot install packages; install it (apt-get install -y redis-server) or set LEASEHOLD_REDIS_SERVER" >&2
      exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "redis-server is missing and apt-get is not available; install Redis 7 and put redis-server on PATH (or set LEASEHOLD_REDIS_SERVER)" >&2
    exit 1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
  # The package may start a system-wide server; leasehold's tests never use it.
  command -v redis-server >/dev/null 2>&1 || { echo "redis-server still not found after install" >&2; exit 1; }
  command -v redis-cli >/dev/null 2>&1 || { echo "redis-cli still not found after install" >&2; exit 1; }
  echo "   $(redis-server --version)"
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
