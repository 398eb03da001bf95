#!/bin/sh
# The SMTP load benchmark: mailtoaster next to Postfix's smtp-sink and a bare aiosmtpd server, driven by
# Postfix's smtp-source (see bench/smtp_load.py and docs/benchmarks.md). Run by hand from anywhere:
#
#     bench/smtp_load.sh [--quick] [--persistent] [--profile] [--messages N] [--rounds N]
#
# smtp-source and smtp-sink come from Debian's postfix package: installed here when missing and we are
# root, with debconf told "No configuration" so that Postfix is neither configured nor started.
# --profile also needs py-spy and memray: installed with pip into a directory of their own
# (${XDG_CACHE_HOME:-~/.cache}/mailtoaster-bench, never into the project's virtualenv) when missing.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
python="$root/.venv/bin/python"
tools="${XDG_CACHE_HOME:-$HOME/.cache}/mailtoaster-bench"
PATH="$PATH:/usr/sbin:/usr/lib/postfix/sbin"

if [ ! -x "$python" ]; then
    echo "smtp_load.sh: $python not found: make the project's virtualenv first" >&2
    exit 2
fi

if ! command -v smtp-source >/dev/null 2>&1 || ! command -v smtp-sink >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "smtp_load.sh: smtp-source/smtp-sink missing; as root: apt-get install postfix" >&2
        exit 2
    fi
    echo "installing postfix for smtp-source and smtp-sink ..." >&2
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >/dev/null
    # With "No configuration" Postfix has no main.cf and does not run; only its test tools are used.
fi

for argument in "$@"; do
    if [ "$argument" = "--profile" ] && [ ! -x "$tools/bin/py-spy" ]; then
        echo "installing py-spy and memray into $tools ..." >&2
        log=$(mktemp)
        if ! "$python" -m pip install --disable-pip-version-check --target "$tools" py-spy memray >"$log" 2>&1
        then
            cat "$log" >&2
            rm -f "$log"
            exit 2
        fi
        rm -f "$log"
    fi
done

cd "$root"
exec "$python" bench/smtp_load.py --tools "$tools" "$@"
