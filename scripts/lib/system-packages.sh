# Shared by the scripts: installs missing Debian packages with apt-get, through sudo
# when not running as root. Usage: ensure_system_packages pkg...
#
# build_packages is what compiling the store needs: RocksDB, and the client libraries
# of the storage engines on databases (PostgreSQL, MariaDB, Redis, SQLite), which
# every build of `kv` links. Scripts that build start from it.
build_packages=(librocksdb-dev libpq-dev libmariadb-dev libhiredis-dev libsqlite3-dev)

ensure_system_packages() {
    local missing=()
    local package
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$package")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    echo "==> installing missing system packages: ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
}
