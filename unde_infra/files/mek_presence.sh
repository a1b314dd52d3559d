#!/bin/sh
# Whether this server holds the Master Encryption Key, for node_exporter's textfile collector.
# The key lives on a tmpfs (RAM only), so a reboot loses it until someone delivers it again
# (`unde-infra ops redeliver-mek`); the MasterEncryptionKeyMissing alert reads this metric.
# Delivered by unde-infra and run by a timer. Its parameters are in "$0.env" beside it: KEY_FILE
# and TEXTFILE. Only the key's presence is read, never its content.
set -eu
# shellcheck source=/dev/null
. "$0.env"
present=0
if [ -s "$KEY_FILE" ]; then
    present=1
fi
umask 022
{
    echo "# HELP unde_master_encryption_key_present 1 when the Master Encryption Key is in RAM on this server."
    echo "# TYPE unde_master_encryption_key_present gauge"
    echo "unde_master_encryption_key_present $present"
} > "$TEXTFILE.tmp"
mv "$TEXTFILE.tmp" "$TEXTFILE"
