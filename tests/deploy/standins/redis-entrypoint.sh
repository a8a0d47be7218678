#!/bin/sh
set -e
[ "$1" = redis-server ] && set -- "$@" --protected-mode no
exec "$@"
