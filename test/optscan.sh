#!/bin/bash
# pgpilot - PostgreSQL pooler and HA agent. Licence: ISC (see LICENSE).
#
# Drift check between the option tables in the source and their documentation. Every entry of
# every "const ConfigOption name[] = {" table in pooler/, ha/ and dns/ (the [pgpilot] table, the
# [databases] and [users] keys, and the sections other subsystems register) must appear in
# etc/pgpilot.ini and in doc/config.md. Exits 1 with the list of what is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
INI=etc/pgpilot.ini
DOC=doc/config.md

# "table option" pairs. Entries begin a line with { "name"; the table ends at the first "};".
pairs=$(awk '
	/ConfigOption [A-Za-z_0-9]+\[\] *= *\{/ {
		t = $0
		sub(/\[\].*/, "", t)
		sub(/.*ConfigOption /, "", t)
		intable = 1
		next
	}
	intable && match($0, /^[ \t]*\{ *"[A-Za-z_0-9]+"/) {
		s = substr($0, RSTART, RLENGTH)
		sub(/^[ \t]*\{ *"/, "", s)
		sub(/"$/, "", s)
		print t, s
	}
	intable && /\};/ { intable = 0 }
' pooler/*.c ha/*.c dns/*.c 2>/dev/null || true)

if [ -z "$pairs" ]; then
	echo "optscan: no option table found in pooler/config.c" >&2
	exit 1
fi

missing=()
count=0
while read -r table name; do
	count=$((count + 1))
	case "$table" in
	database_keys | user_keys)
		# a connection-string key: named in the sample's [databases] / [users] comments
		grep -Eq "(^|[^A-Za-z_0-9])${name}([^A-Za-z_0-9]|$)" "$INI" ||
			missing+=("$name ($table): not in $INI")
		;;
	*)
		# an option of [pgpilot] or of a registered section: its own line in the sample,
		# set or commented out
		grep -Eq "^;?${name}[[:space:]]*=" "$INI" || missing+=("$name ($table): not in $INI")
		;;
	esac
	# every entry has a row of a reference table in the doc: | `name` |
	grep -Fq "| \`${name}\` |" "$DOC" || missing+=("$name ($table): not in $DOC")
done <<<"$pairs"

if [ ${#missing[@]} -gt 0 ]; then
	echo "optscan: ${#missing[@]} undocumented:" >&2
	printf '  %s\n' "${missing[@]}" >&2
	exit 1
fi
echo "optscan: $count options, all documented"
