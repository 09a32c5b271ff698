#!/bin/sh
# Turns the pages that swift-argument-parser's generate-manual plugin writes (ferry.1,
# ferry.copy.1, ferry.ledger.list.1, ...) into the pages ferry installs (ferry.1, ferry-copy.1,
# ...), so that `man ferry-copy` finds them. Run by `make man`:
#
#   sh scripts/man-install-names.sh GENDIR OUTDIR
#
# The command definitions stay the only source; this script only reshapes them:
# - names: .Dt FERRY-COPY, NAME ferry-copy, while the SYNOPSIS still reads "ferry copy";
# - the discussion text: blank lines become paragraphs, indented lines literal displays, and
#   headings such as "EXAMPLES:" or "LEDGER:" become sections after the options;
# - EXIT STATUS: the table in ferry's own discussion (ExitStatus.manual) replaces the plugin's
#   generic "exits 0 on success, and >0 if an error occurs" on every page;
# - defaults and accepted values, which the plugin leaves out, are copied from `ferry CMD --help`
#   when a built ferry is found (FERRY_BIN, else .build/release/ferry, which the plugin has just
#   built);
# - sub-subcommands (ferry ledger list/show/export) are folded into their parent's page;
# - `ferry help` gets no page; SEE ALSO lists the installed names.
set -eu

GEN=${1:?usage: man-install-names.sh GENDIR OUTDIR}
OUT=${2:?usage: man-install-names.sh GENDIR OUTDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FERRY_BIN:-$ROOT/.build/release/ferry}

[ -f "$GEN/ferry.1" ] || { echo "man-install-names: no $GEN/ferry.1; run generate-manual first" >&2; exit 1; }
if [ ! -x "$BIN" ]; then
    echo "man-install-names: no ferry binary at $BIN; pages will lack option defaults" >&2
    BIN=""
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"

# The exit-status table, "CODE<TAB>TEXT" a line, from ferry(1)'s "EXIT STATUS:" paragraph.
awk '/^EXIT STATUS:/ { on = 1; next }
     on && /^[0-9]+ +/ { code = $1; text = $0; sub(/^[0-9]+ +/, "", text); print code "\t" text; next }
     on { exit }' "$GEN/ferry.1" | sort -n >"$TMP/exit"
[ -s "$TMP/exit" ] || { echo "man-install-names: no EXIT STATUS table in $GEN/ferry.1" >&2; exit 1; }

# "LONG-NAME<TAB>(default: ...)" for each option of `ferry WORDS... --help` that shows one.
defaults() {
    : >"$TMP/defaults"
    [ -n "$BIN" ] || return 0
    # shellcheck disable=SC2086 # the command words are meant to split
    "$BIN" $1 --help 2>/dev/null | awk '
        function flush() {
            if (match(entry, /^  (-[a-zA-Z], )?--[a-z0-9-]+/)) {
                opt = entry; sub(/^  (-[a-zA-Z], )?--/, "", opt); sub(/[^a-z0-9-].*$/, "", opt)
                if (match(entry, /\((default|values): [^()]*\)$/)) print opt "\t" substr(entry, RSTART)
            }
            entry = ""
        }
        /^(ARGUMENTS|OPTIONS):$/ { flush(); on = 1; next }
        on && /^  [-<]/ { flush(); entry = $0; next }
        on && /^   +[^ ]/ { line = $0; sub(/^ +/, "", line); entry = entry " " line; next }
        { flush(); on = 0 }
        END { flush() }' >"$TMP/defaults"
}

# One awk program, two modes. mode=page prints a whole page; mode=sub prints a ".Ss" block for a
# parent's COMMANDS section and appends its synopsis lines to the file synf.
PROG='
function ticks(s,    out) {
    out = ""
    while (match(s, /`[^`]*`/)) {
        out = out substr(s, 1, RSTART - 1) "\\fB" substr(s, RSTART + 1, RLENGTH - 2) "\\fP"
        s = substr(s, RSTART + RLENGTH)
    }
    return out s
}
function put(s) { text[cur] = text[cur] s "\n" }
# Text right after a display gets a paragraph break, the same space as before the display.
function endlit() { if (lit) { put(".Ed"); lit = 0; para = 1 } }
function discussion(line) {
    if (line == "") { endlit(); para = 1; return }
    if (line ~ /^  /) {
        if (!lit) { put(".Bd -literal -offset indent"); lit = 1; para = 0 }
        sub(/^  /, "", line)
        if (line ~ /^[.\047]/) line = "\\&" line
        put(line)
        return
    }
    endlit()
    if (mode == "page" && match(line, /^[A-Z][A-Z ,]*[A-Z]:( |$)/)) {
        cur = ++nsec
        title[cur] = substr(line, 1, RLENGTH - (substr(line, RLENGTH, 1) == " " ? 2 : 1))
        line = substr(line, RLENGTH + 1)
        para = 0
        if (line == "") return
        line = toupper(substr(line, 1, 1)) substr(line, 2)
    }
    if (para && text[cur] != "") put(".Pp")
    para = 0
    put(ticks(line))
}
# The default goes on the description line itself: at the end of an input line troff would put
# two spaces after the sentence.
function flushdefault(    last) {
    if (pending == "") return
    last = opts; sub(/\n$/, "", last); sub(/^.*\n/, "", last)
    if (last ~ /^\./) opts = opts pending "\n"
    else opts = substr(opts, 1, length(opts) - 1) " " pending "\n"
    pending = ""
}
function option(line,    name, n, w, i) {
    if (line ~ /^\.Bl/) depth++
    if (line == ".Pp") { heldpp = 1; return }
    if (depth == 1 && (line ~ /^\.It/ || line ~ /^\.El/)) {
        heldpp = 0
        flushdefault()
        # ".It Fl -chunk-size Ar size", ".It Fl e , -rsh Ar cmd": Fl adds a dash to "-rsh".
        if (line ~ /^\.It Fl /) {
            n = split(line, w, " ")
            for (i = 3; i <= n && w[i] != "Ar"; i++) if (w[i] ~ /^-/) name = substr(w[i], 2)
            if (name in dflt) pending = dflt[name]
        }
    }
    if (heldpp) { opts = opts ".Pp\n"; heldpp = 0 }
    opts = opts (line ~ /^\./ ? line : ticks(line)) "\n"
    if (line ~ /^\.El/ && --depth == 0) inopts = 2
}
function slurp(file,    s, l) {
    s = ""
    if (file == "") return s
    while ((getline l < file) > 0) s = s l "\n"
    close(file)
    return s
}
BEGIN {
    FS = "\n"
    cur = 0; nsec = 0
    while ((getline l < deff) > 0) { split(l, kv, "\t"); dflt[kv[1]] = kv[2] }
    while ((getline l < exitf) > 0) { split(l, kv, "\t"); exits = exits ".It " kv[1] "\n" kv[2] "\n" }
}
/^\.Sh / {
    endlit()
    sec = substr($0, 5); gsub(/"/, "", sec)
    if (sec !~ /^(NAME|SYNOPSIS|DESCRIPTION|EXIT STATUS|SEE ALSO)$/) other = other $0 "\n"
    next
}
sec == "" {
    if ($0 ~ /^\.Dt /) $0 = ".Dt " toupper(name) " 1"
    head = head $0 "\n"
    if ($0 ~ /^\.\\"/) head = head ".\\\" Installed as " name ".1 by scripts/man-install-names.sh (make man); do not edit.\n"
    next
}
sec == "NAME" {
    if ($0 ~ /^\.Nm/) $0 = ".Nm " name
    if ($0 ~ /^\.Nd /) {
        # Unquoted, so that whatis and apropos do not show the quotes; a two-letter word that
        # could be read as an mdoc macro (No, Re, ...) is kept literal.
        abstract = substr($0, 5); gsub(/^"|"$/, "", abstract)
        n = split(abstract, w, " "); $0 = ".Nd"
        for (i = 1; i <= n; i++) $0 = $0 " " (w[i] ~ /^[A-Z][a-z]$/ ? "\\&" : "") w[i]
    }
    names = names $0 "\n"
    next
}
sec == "SYNOPSIS" {
    if ($0 == ".Nm") $0 = ".Nm \"" cmd "\""
    synopsis = synopsis $0 "\n"
    next
}
sec == "DESCRIPTION" {
    if (inopts == 0 && $0 ~ /^\.Bl/) { endlit(); inopts = 1 }
    if (inopts) option($0); else discussion($0)
    next
}
sec == "EXIT STATUS" || sec == "SEE ALSO" { next }
{ other = other $0 "\n" }
END {
    endlit()
    if (mode == "sub") {
        printf "%s", synopsis >> synf
        print ".Ss \"" cmd "\""
        print abstract
        if (text[0] != "") printf ".Pp\n%s", text[0]
        printf "%s", opts
        exit
    }
    printf "%s", head
    printf ".Sh NAME\n%s", names
    subsyn = slurp(synf)
    printf ".Sh SYNOPSIS\n%s", (subsyn != "" ? subsyn : synopsis)
    printf ".Sh DESCRIPTION\n%s", text[0]
    if (opts != "") printf ".Sh OPTIONS\n%s", opts
    subs = slurp(subf)
    if (subs != "") printf ".Sh COMMANDS\n%s", subs
    for (i = 1; i <= nsec; i++)
        if (title[i] != "EXAMPLES" && title[i] != "EXIT STATUS") printf ".Sh \"%s\"\n%s", title[i], text[i]
    print ".Sh \"EXIT STATUS\""
    if (ENVIRON["EXITNOTE"] != "") print ENVIRON["EXITNOTE"]
    else printf ".Bl -tag -width Ds\n%s.El\n", exits
    for (i = 1; i <= nsec; i++)
        if (title[i] == "EXAMPLES") printf ".Sh EXAMPLES\n%s", text[i]
    printf "%s", other
    print ".Sh \"SEE ALSO\""
    n = split(seealso, pages, " ")
    for (i = 1; i <= n; i++) if (pages[i] != name) { list = list (list == "" ? "" : " ,\n") ".Xr " pages[i] " 1" }
    print list
}'

# subcommands "WORDS": the generated pages one level below `ferry WORDS`, as words, in the order
# `ferry WORDS --help` lists them (file-name order without a binary). `help` gets no page.
subcommands() {
    prefix=ferry${1:+.$(echo "$1" | tr ' ' .)}
    found=""
    for f in "$GEN/$prefix".*.1; do
        [ -f "$f" ] || continue
        w=${f##*/"$prefix".}; w=${w%.1}
        case $w in help|*.*) continue ;; esac
        found="$found $w"
    done
    listed=""
    # shellcheck disable=SC2086 # the command words are meant to split
    [ -z "$BIN" ] || listed=$("$BIN" $1 --help 2>/dev/null \
        | awk '/^SUBCOMMANDS:$/ { on = 1; next } on && /^  [a-z]/ { print $1; next } on && !/^ / { exit }' | tr '\n' ' ')
    for w in $listed; do case " $found " in *" $w "*) echo "$w" ;; esac; done
    for w in $found; do case " $listed " in *" $w "*) ;; *) echo "$w" ;; esac; done
}

# One page for ferry and one for each command; a command's own subcommands fold into its page.
tops="ferry"
for w in $(subcommands ""); do tops="$tops ferry-$w"; done

rm -f "$OUT"/ferry.1 "$OUT"/ferry-*.1
for page in $tops; do
    words=$(echo "${page#ferry}" | sed 's/^-//')
    gen=$GEN/$(echo "$page" | tr - .).1
    : >"$TMP/subs"; : >"$TMP/syn"
    if [ "$page" = ferry ]; then
        # ferry(1) lists the command pages with their one-line summaries.
        echo ".Bl -tag -width Ds" >"$TMP/subs"
        for p in $tops; do
            [ "$p" = ferry ] && continue
            echo ".It Xr $p 1"
            sed -n 's/^\.Nd "\(.*\)"$/\1/p' "$GEN/$(echo "$p" | tr - .).1"
        done >>"$TMP/subs"
        echo ".El" >>"$TMP/subs"
    fi
    [ -z "$words" ] || for w in $(subcommands "$words"); do
        defaults "$words $w"
        awk -v mode=sub -v name="$page" -v cmd="ferry $words $w" -v deff="$TMP/defaults" -v exitf=/dev/null \
            -v synf="$TMP/syn" "$PROG" "$GEN/ferry.$words.$w.1" >>"$TMP/subs"
    done
    defaults "$words"
    EXITNOTE=""
    # serve's status goes to a program, the client, which reports the far error itself.
    [ "$page" = ferry-serve ] && EXITNOTE='ferry serve exits 0 when it served its request, else with the status
.Xr ferry 1
lists for the error that ended its session. The client shows that error prefixed with
"remote:" and exits with the same status.'
    export EXITNOTE
    awk -v mode=page -v name="$page" -v cmd="ferry${words:+ $words}" -v deff="$TMP/defaults" \
        -v exitf="$TMP/exit" -v subf="$TMP/subs" -v synf="$TMP/syn" -v seealso="$tops" \
        "$PROG" "$gen" >"$OUT/$page.1"
    echo "$OUT/$page.1"
done
