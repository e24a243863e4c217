# Shared by scripts/test and scripts/dev: finds, installs (Debian, as root)
# and starts the services kiln needs. Source it; it defines functions only.

say() { printf '\n== %s\n' "$*"; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_updated=
apt_install() {
  can_install || die "missing $*; install the Debian packages: $* (or run as root on Debian)"
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if [ -n "${KILN_TEST_PG_ADMIN_URL:-}" ]; then return; fi
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  say "starting PostgreSQL"
  if ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql postgresql-client
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -1)
  [ -n "$version" ] || die "no PostgreSQL cluster under /etc/postgresql"
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # The tests connect as postgres over TCP without a password.
  if ! grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && return; sleep 0.2; done
  die "PostgreSQL did not start on 127.0.0.1:5432"
}

ensure_redis() {
  if [ -n "${KILN_TEST_REDIS_URL:-}" ]; then return; fi
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  say "starting Redis"
  command -v redis-server >/dev/null || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return; sleep 0.2; done
  die "Redis did not start on 127.0.0.1:6379"
}


# What kiln's workers run besides kiln itself: LibreOffice with Python UNO
# (conversions, Draw for DXF drawings, Impress for Keynote), ffmpeg and
# ffprobe (Supermark's videos), prlimit and setpriv (limits on children).
ensure_build_libs() {
  # The preview worker encodes JPEG with libjpeg-turbo, linked at build time.
  if ! pkg-config --exists libturbojpeg 2>/dev/null; then
    say "installing libjpeg-turbo (libturbojpeg0-dev) and pkg-config to build kiln"
    apt_install libturbojpeg0-dev pkg-config
  fi
}

ensure_worker_tools() {
  if [ ! -x /usr/lib/libreoffice/program/soffice.bin ] || [ ! -f /usr/lib/python3/dist-packages/uno.py ] ||
     ! dpkg -s libreoffice-draw-nogui >/dev/null 2>&1; then
    say "installing LibreOffice and python3-uno"
    apt_install libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui libreoffice-draw-nogui \
      python3-uno fonts-dejavu-core
  fi
  if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
    say "installing ffmpeg"
    apt_install ffmpeg
  fi
  if ! command -v mutool >/dev/null || ! command -v qpdf >/dev/null; then
    say "installing mupdf-tools and qpdf (the preview worker repairs damaged PDFs with them)"
    apt_install mupdf-tools qpdf
  fi
  command -v prlimit >/dev/null && command -v setpriv >/dev/null || apt_install util-linux
}
