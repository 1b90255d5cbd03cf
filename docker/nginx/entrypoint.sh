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
sed "s/^worker_processes .*;/worker_processes $workers;/" "$src" >"$out.new"
mv "$out.new" "$out"
echo "entrypoint: $out from $src, worker_processes $workers"

[ "$#" -eq 0 ] || exec "$@"
