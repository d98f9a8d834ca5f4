#!/bin/sh
# Usage: render-alertmanager-config.sh SOURCE DEST
#
# Copies Alertmanager's config, replacing the placeholder receiver URLs with
# PAGE_WEBHOOK_URL and TICKET_WEBHOOK_URL when they are set, and giving the heartbeat
# receiver (the Watchdog's dead man's switch) a webhook to HEARTBEAT_WEBHOOK_URL when
# that is set. Alertmanager cannot read environment variables itself, so
# docker-compose.yml runs this before starting it. awk's index/substr copy the URLs
# verbatim (sed or gsub would treat & and \ specially).
set -eu
src=$1
dest=$2
awk '
BEGIN {
  url["http://alert-relay.invalid/page"] = ENVIRON["PAGE_WEBHOOK_URL"]
  url["http://alert-relay.invalid/ticket"] = ENVIRON["TICKET_WEBHOOK_URL"]
}
{
  for (placeholder in url) {
    i = index($0, placeholder)
    if (i > 0 && url[placeholder] != "")
      $0 = substr($0, 1, i - 1) url[placeholder] substr($0, i + length(placeholder))
  }
  print
  if ($0 == "  - name: heartbeat" && ENVIRON["HEARTBEAT_WEBHOOK_URL"] != "") {
    print "    webhook_configs:"
    print "      - url: " ENVIRON["HEARTBEAT_WEBHOOK_URL"]
    print "        send_resolved: false"
  }
}' "$src" > "$dest"
