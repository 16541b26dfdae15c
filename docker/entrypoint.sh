#!/bin/sh
# The image's entry point: runs its arguments (by default `manage.py serve`) with a SECRET_KEY.
#
# An operator's SECRET_KEY is used as it is. Without one, and with SECRET_KEY_FILE set (compose
# sets it to a file in a volume of its own), the key is read from that file, which is made with
# a fresh random key on first start: `docker compose up` works without configuration, and the
# key survives restarts and upgrades. compose's one-shot `migrate` runs first, so two app
# containers never race to create it.
set -eu

if [ -z "${SECRET_KEY:-}" ] && [ -n "${SECRET_KEY_FILE:-}" ]; then
    if [ ! -s "$SECRET_KEY_FILE" ]; then
        umask 077
        python -c 'import secrets; print(secrets.token_urlsafe(50))' >"$SECRET_KEY_FILE.new"
        mv "$SECRET_KEY_FILE.new" "$SECRET_KEY_FILE"
    fi
    SECRET_KEY=$(cat "$SECRET_KEY_FILE")
    export SECRET_KEY
fi

exec "$@"
