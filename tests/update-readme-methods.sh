#!/usr/bin/env bash
# Rewrites the method status table in README.md from `kata-agent --methods`.
# Inputs: AGENT (default target/debug/kata-agent), README (default README.md).
set -euo pipefail

AGENT=${AGENT:-target/debug/kata-agent}
README=${README:-README.md}
TABLE=$(mktemp)
OUT=$(mktemp)
trap 'rm -f "$TABLE" "$OUT"' EXIT

{
    echo "| method | status |"
    echo "|---|---|"
    # Each line: name, status and, for a method decided not to be served,
    # the reason.
    "$AGENT" --methods | while IFS=$'\t' read -r name status why; do
        if [ "$status" = implemented ]; then
            echo "| \`$name\` | implemented |"
        elif [ -n "$why" ]; then
            echo "| \`$name\` | \`UNIMPLEMENTED\` status: $why |"
        else
            echo "| \`$name\` | \`UNIMPLEMENTED\` status |"
        fi
    done
} >"$TABLE"

# Replace the lines from the table header to the blank line after the table.
awk -v table="$TABLE" '
    /^\| method \| status \|$/ { while ((getline line < table) > 0) print line; skipping = 1; next }
    skipping && /^\|/ { next }
    { skipping = 0; print }
' "$README" >"$OUT"
cat "$OUT" >"$README"
echo "updated $README"
