#!/bin/sh
# Start of the nginx service in docker-compose.yml: render the config, then
# exec the command given (nginx -g 'daemon off;'), so nginx stays PID 1.
#
# The repo's nginx.conf is already the compose form (upstreams by service
# name, listen 80); only the worker count changes. `worker_processes auto`
# starts one worker per host core whatever the container's CPU limit, and
# every worker preallocates its worker_connections: on a big host that alone
# exceeds the memory limit. Run with `sh`, so it needs no exec bit.
set -eu

src=${NGINX_CONF_SRC:-/etc/nginx/api-hammer/nginx.conf}
out=${NGINX_CONF_OUT:-/etc/nginx/nginx.conf}
workers=${NGINX_WORKER_PROCESSES:-2}

case $workers in
  '' | *[!0-9]* | 0) echo "entrypoint: NGINX_WORKER_PROCESSES must be a positive number, not '$workers'" >&2; exit 1 ;;
esac
if [ "$(grep -c '^worker_processes ' "$src")" != 1 ]; then
  echo "entrypoint: $src: expected exactly one line starting with 'worker_processes '" >&2
  exit 1
fi
# Upstream servers by name are resolved once, at start: a service container
# recreated (or restarted) with a new address would get this gateway's 502s
# until nginx restarted. So names are re-resolved through Docker's DNS every
# few seconds (`resolve`, open-source nginx since 1.27.3, needs the upstream
# in shared memory: `zone`). ./dev's nginx (Debian's 1.22) has no `resolve`
# and needs none (fixed addresses), so the repo's file leaves it out.
resolver=${NGINX_RESOLVER:-127.0.0.11}
sed "s/^worker_processes .*;/worker_processes $workers;/" "$src" | awk -v resolver="$resolver" '
  /^http \{/ { print; print "    resolver " resolver " valid=5s ipv6=off;"; next }
  /^ *upstream [a-z_]+ \{/ { print; print "        zone " $2 " 64k;"; next }
  /^ *server [a-z0-9.-]+:[0-9]+/ { sub(/;$/, " resolve;") }
  { print }
' >"$out.new"
if [ "$(grep -c ' resolve;$' "$out.new")" -lt 1 ]; then
  echo "entrypoint: $src: found no upstream server to re-resolve" >&2
  exit 1
fi
mv "$out.new" "$out"
echo "entrypoint: $out from $src, worker_processes $workers, upstreams re-resolved through $resolver"

[ "$#" -eq 0 ] || exec "$@"
