#!/bin/sh
# postern-setup - create (or check) a postern instance: system users and
# groups, the ROOT tree with its owners and modes, the programs in ROOT/bin,
# a commented conf/postern.conf, a self-signed certificate, and the s6
# service tree (from the templates of the source tree's service/, see
# find_templates).  Idempotent: re-running keeps users, certificates, the
# configuration and all data, and repairs owners and modes.
#
#   postern-setup --root DIR [--hostname H] [--domain D]... [--listen ADDR]...
#                 [--ports smtp=25,submission=587,smtps=465,pop3=110,pop3s=995]
#                 [--postmaster ADDR] [--check]
#
# See postern-setup(8) and docs/INTERFACES.md ("Instance layout").
set -u
umask 022
prog=postern-setup

die() { echo "$prog: fatal: $*" >&2; exit 100; }
usage_text() {
    echo "usage: $prog --root DIR [--hostname H] [--domain D]... [--listen ADDR]..."
    echo "       [--ports smtp=25,submission=587,smtps=465,pop3=110,pop3s=995]"
    echo "       [--postmaster ADDR] [--check]"
}
usage() {
    usage_text >&2
    exit 100
}

ROOT=""; HOSTNAME_SET=""; DOMAINS=""; LISTEN=""; CHECK=0
PORTS="smtp=25,submission=587,smtps=465,pop3=110,pop3s=995"
POSTMASTER="root"
while [ $# -gt 0 ]; do
    case "$1" in
    --root) [ $# -ge 2 ] || usage; ROOT=$2; shift 2 ;;
    --root=*) ROOT=${1#--root=}; shift ;;
    --hostname) [ $# -ge 2 ] || usage; HOSTNAME_SET=$2; shift 2 ;;
    --domain) [ $# -ge 2 ] || usage; DOMAINS="$DOMAINS $2"; shift 2 ;;
    --ports) [ $# -ge 2 ] || usage; PORTS=$2; shift 2 ;;
    --listen) [ $# -ge 2 ] || usage; LISTEN="$LISTEN $2"; shift 2 ;;
    --postmaster) [ $# -ge 2 ] || usage; POSTMASTER=$2; shift 2 ;;
    --check) CHECK=1; shift ;;
    -h|--help) usage_text; exit 0 ;;
    -*) echo "$prog: unknown option $1" >&2; usage ;;
    *) [ -z "$ROOT" ] || usage; ROOT=$1; shift ;;
    esac
done
[ -n "$ROOT" ] || usage
# --listen: addresses as postern.conf(5) takes them, IPv6 without brackets
for a in $LISTEN; do
    case "$a" in
    *[!0-9A-Fa-f.:]*) ok=0 ;;                          # a name, brackets
    *:*:*) ok=1 ;;                                     # IPv6 (the listener parses it)
    *:*) ok=0 ;;                                       # ADDR:PORT
    *) printf '%s\n' "$a" | grep -Eqx '[0-9]{1,3}(\.[0-9]{1,3}){3}' && ok=1 || ok=0 ;;
    esac
    [ "$ok" = 1 ] || die "--listen '$a': give an IPv4 or IPv6 address (IPv6 without brackets: ::1)"
done
if [ -z "$LISTEN" ]; then
    # every address; IPv6's too where the host has IPv6 (an AAAA record
    # for the host then reaches the SMTP port, as the README asks)
    LISTEN="0.0.0.0"
    grep -q . /proc/net/if_inet6 2>/dev/null && LISTEN="0.0.0.0 ::"
fi
case "$ROOT" in /*) ;; *) ROOT="$(pwd)/$ROOT" ;; esac
ROOT=${ROOT%/}
case "$ROOT" in *[!A-Za-z0-9/._+-]*) die "ROOT '$ROOT': use only letters, digits and / . _ + - (it is written into run scripts)" ;; esac
# a domain name as postern.conf(5) takes it: labels of letters, digits and
# hyphens (not at either end), 1-63 long, dot-separated, at most $2 in all
domain_ok() {
    [ ${#1} -le "$2" ] && printf '%s\n' "$1" |
        grep -Eqx '[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*'
}
if [ -n "$HOSTNAME_SET" ]; then
    domain_ok "$HOSTNAME_SET" 243 || die "--hostname '$HOSTNAME_SET' is not a domain name (at most 243 characters)"
else
    HOSTNAME_SET=$(hostname -f 2>/dev/null || hostname 2>/dev/null || echo localhost)
    if ! domain_ok "$HOSTNAME_SET" 243; then
        echo "$prog: warning: this machine's name '$HOSTNAME_SET' is not a domain name; using localhost (give --hostname)" >&2
        HOSTNAME_SET=localhost
    fi
fi
[ -n "$DOMAINS" ] || DOMAINS=" localhost"
for d in $DOMAINS; do
    domain_ok "$d" 253 || die "--domain '$d' is not a domain name"
done
for kv in $(echo "$PORTS" | tr ',' ' '); do
    case "${kv%%=*}" in
    smtp|submission|smtps|pop3|pop3s) ;;
    *) die "--ports: unknown name '${kv%%=*}' (use smtp submission smtps pop3 pop3s)" ;;
    esac
    case "$kv" in *=*) ;; *) die "--ports: '$kv' is not NAME=PORT" ;; esac
    case "${kv#*=}" in ''|*[!0-9]*) die "--ports: ${kv%%=*}: '${kv#*=}' is not a port number" ;; esac
done
SRC=$(cd "$(dirname "$0")" && pwd)
# the directory whose service/ holds the templates: make writes the source
# tree here (bin/postern-setup), setup writes where it found them into its
# copy in ROOT/bin; scripts/postern-setup.sh and an installed copy have none
BUILT_FROM="@BUILT_FROM@"
case "$BUILT_FROM" in @*) BUILT_FROM="" ;; esac

# the daemons that are s6 services (tls-proxy is exec'd per connection)
SERVICES="auth-checker queue-manager smtp-listener pop3-listener"
SYSUSERS="postern-smtp postern-queue postern-auth postern-pop3 postern-tls postern-remote postern-log"
HEX="0 1 2 3 4 5 6 7 8 9 A B C D E F"

if [ "$(id -u)" = 0 ]; then
    ISROOT=1
    U_ROOT=root; G_ROOT=root
    U_QUEUE=postern-queue; U_AUTH=postern-auth; U_TLS=postern-tls
    U_LOG=postern-log; G_POSTERN=postern
    G_QUEUE=postern-queue; G_AUTH=postern-auth; G_TLS=postern-tls; G_LOG=postern-log
else
    # an ordinary user: nothing can be dropped; every user is oneself
    ISROOT=0
    me=$(id -un); mg=$(id -gn)
    U_ROOT=$me; G_ROOT=$mg
    U_QUEUE=$me; U_AUTH=$me; U_TLS=$me
    U_LOG=$me; G_POSTERN=$mg
    G_QUEUE=$mg; G_AUTH=$mg; G_TLS=$mg; G_LOG=$mg
fi

PROBLEMS=0
CHANGED=""      # service files this run rewrote
problem() { # what, fix
    PROBLEMS=$((PROBLEMS + 1))
    echo "$prog: problem: $1"
    echo "    fix: $2"
}
note() { [ "$CHECK" = 1 ] || echo "$prog: $*"; }

# ---- system users and groups -------------------------------------------
ensure_users() {
    [ "$ISROOT" = 1 ] || { note "not root: running every part as $(id -un) (no privilege separation)"; return 0; }
    for u in $SYSUSERS; do
        if ! getent passwd "$u" >/dev/null; then
            if [ "$CHECK" = 1 ]; then
                problem "system user $u is missing" "run: $prog --root $ROOT"
                continue
            fi
            getent group "$u" >/dev/null || groupadd --system "$u" || die "groupadd $u failed"
            useradd --system --gid "$u" --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin --comment "postern $u" "$u" || die "useradd $u failed"
            note "created system user $u"
        fi
    done
    if ! getent group postern >/dev/null; then
        if [ "$CHECK" = 1 ]; then
            problem "group postern is missing" "run: $prog --root $ROOT"
        else
            groupadd --system postern || die "groupadd postern failed"
            note "created group postern"
        fi
    fi
    for u in postern-smtp postern-pop3; do
        getent passwd "$u" >/dev/null || continue
        getent group postern >/dev/null || continue
        if ! id -nG "$u" | tr ' ' '\n' | grep -qx postern; then
            if [ "$CHECK" = 1 ]; then
                problem "$u is not a member of group postern (it cannot reach run/auth/socket)" "usermod -a -G postern $u"
            else
                usermod -a -G postern "$u" || die "usermod -a -G postern $u failed"
                note "added $u to group postern"
            fi
        fi
    done
}

# ---- one entry of the tree: create/repair, or check --------------------
# want TYPE PATH OWNER GROUP MODE   (TYPE: d directory, f file, p fifo)
# Inside ROOT/queue every directory belongs to postern-queue, which can swap
# any of them for a symlink at any moment: there root acts on nothing by a
# path that follows symlinks. It makes directories and the FIFO with their
# mode (mkdir and mkfifo follow no final symlink), chowns with chown -h, run
# by find -execdir from the directory find entered without following
# symlinks, and chmods as the owner (s6-setuidgid: a swapped path then
# reaches nothing the owner could not change anyway).
in_queue() {
    [ "$ISROOT" = 1 ] || return 1
    case $1 in "$ROOT"/queue/*) return 0 ;; esac
    return 1
}

want() {
    t=$1; p=$2; o=$3; g=$4; m=$5
    rel=${p#"$ROOT"/}
    if [ ! -e "$p" ] && [ ! -L "$p" ]; then
        if [ "$CHECK" = 1 ]; then
            problem "$rel is missing" "run: $prog --root $ROOT"
            return
        fi
        case $t in
        d) mkdir -m "$m" "$p" || die "mkdir $p failed" ;;
        f) : > "$p" || die "cannot create $p" ;;
        p) mkfifo -m "$m" "$p" || die "mkfifo $p failed" ;;
        esac
    fi
    if [ -L "$p" ]; then
        if [ "$CHECK" = 1 ]; then problem "$rel is a symbolic link" "remove it and run: $prog --root $ROOT"; return; fi
        die "$p is a symbolic link: refusing to follow it (remove it and re-run)"
    fi
    case $t in
    d) [ -d "$p" ] || { [ "$CHECK" = 1 ] && { problem "$rel is not a directory" "remove it and run: $prog --root $ROOT"; return; }; die "$p is not a directory"; } ;;
    f) [ -f "$p" ] || { [ "$CHECK" = 1 ] && { problem "$rel is not a regular file" "remove it and run: $prog --root $ROOT"; return; }; die "$p is not a regular file"; } ;;
    p) [ -p "$p" ] || { [ "$CHECK" = 1 ] && { problem "$rel is not a FIFO" "rm $p; mkfifo -m 0600 $p; chown $o:$g $p"; return; }; die "$p is not a FIFO"; } ;;
    esac
    cur=$(stat -c '%U:%G %a' "$p")
    if [ "$cur" != "$o:$g $m" ]; then
        if [ "$CHECK" = 1 ]; then
            problem "$rel is $(echo "$cur" | sed 's/ / mode /'), should be $o:$g mode $m" "chown $o:$g $p && chmod $m $p"
        elif in_queue "$p"; then
            if [ "${cur% *}" != "$o:$g" ]; then
                PATH=/usr/sbin:/usr/bin:/sbin:/bin find -P "${p%/*}" -mindepth 1 -maxdepth 1 \
                    -name "${p##*/}" -execdir chown -h "$o:$g" {} + || die "chown $p failed"
            fi
            [ "${cur#* }" = "$m" ] || s6-setuidgid "$o" chmod "$m" "$p" || die "chmod $p failed"
        else
            chown "$o:$g" "$p" || die "chown $p failed"
            chmod "$m" "$p" || die "chmod $p failed"
        fi
    fi
}

tree() {
    if [ "$CHECK" = 1 ]; then
        [ -d "$ROOT" ] || { problem "$ROOT does not exist" "run: $prog --root $ROOT"; return; }
    else
        mkdir -p "$ROOT" || die "cannot create $ROOT"
    fi
    want d "$ROOT" "$U_ROOT" "$G_ROOT" 755
    for d in bin conf mail service log run; do want d "$ROOT/$d" "$U_ROOT" "$G_ROOT" 755; done
    # mail/ holds the homes of users without one of their own: +T, as the
    # root of a filesystem is, so ext4 spreads those homes (and so their
    # Maildirs' inodes) over block groups (docs/QUEUE.md, "Why tmp/<h>")
    [ "$CHECK" = 1 ] || chattr +T "$ROOT/mail" 2>/dev/null || :
    want d "$ROOT/run/auth" "$U_ROOT" "$G_POSTERN" 750
    want d "$ROOT/empty" "$U_ROOT" "$G_ROOT" 555
    want d "$ROOT/conf/tls" "$U_ROOT" "$G_ROOT" 755
    want d "$ROOT/queue" "$U_QUEUE" "$G_QUEUE" 700
    for d in tmp mess env todo bounce lock; do want d "$ROOT/queue/$d" "$U_QUEUE" "$G_QUEUE" 700; done
    # tmp/<h>: injections spread over ext4 block groups (chattr +T makes the
    # Orlov allocator place tmp's subdirectories apart; docs/QUEUE.md). Best
    # effort: other filesystems refuse the flag and lose nothing.
    if [ "$CHECK" = 1 ]; then :
    elif [ "$ISROOT" = 1 ]; then s6-setuidgid "$U_QUEUE" chattr +T "$ROOT/queue/tmp" 2>/dev/null || :
    else chattr +T "$ROOT/queue/tmp" 2>/dev/null || :
    fi
    for h in $HEX; do
        want d "$ROOT/queue/mess/$h" "$U_QUEUE" "$G_QUEUE" 700
        want d "$ROOT/queue/env/$h" "$U_QUEUE" "$G_QUEUE" 700
        want d "$ROOT/queue/tmp/$h" "$U_QUEUE" "$G_QUEUE" 700
    done
    want p "$ROOT/queue/lock/trigger" "$U_QUEUE" "$G_QUEUE" 600
    for s in $SERVICES; do
        [ -x "$ROOT/bin/$s" ] || [ -x "$SRC/$s" ] || continue
        want d "$ROOT/log/$s" "$U_LOG" "$G_LOG" 750
    done
}

# ---- programs ----------------------------------------------------------
install_programs() {
    [ "$SRC" = "$ROOT/bin" ] && return 0
    for f in "$SRC"/*; do
        n=${f##*/}
        case "$n" in deps|run-demo|.*) continue ;; esac
        [ -f "$f" ] && [ -x "$f" ] || continue
        tmp="$ROOT/bin/.$n.new"
        rm -f "$tmp"
        if [ "$n" = postern-setup ]; then
            # the copy in ROOT/bin finds its templates where this run found
            # them (its BUILT_FROM names the directory holding service/),
            # so `ROOT/bin/postern-setup --root ROOT` works for an installed
            # copy too; a directory name the line could not hold as it is
            # keeps the copy's own line
            from=${TEMPLATES%/service}
            case "$from" in
                *[!A-Za-z0-9/._+-]*) cp "$f" "$tmp" || die "cp $f failed" ;;
                *) sed "s|^BUILT_FROM=\".*\"\$|BUILT_FROM=\"$from\"|" "$f" > "$tmp" || die "cannot copy $f" ;;
            esac
        else
            cp "$f" "$tmp" || die "cp $f failed"
        fi
        if [ "$n" = queue-inject ]; then
            chown "$U_QUEUE:$G_QUEUE" "$tmp" && chmod 4711 "$tmp" || die "cannot make $tmp setuid"
        else
            chown "$U_ROOT:$G_ROOT" "$tmp" && chmod 755 "$tmp" || die "chmod $tmp failed"
        fi
        mv -f "$tmp" "$ROOT/bin/$n" || die "mv $tmp failed"
    done
}

check_programs() {
    [ -d "$ROOT/bin" ] || return 0
    if [ -e "$ROOT/bin/queue-inject" ]; then
        want f "$ROOT/bin/queue-inject" "$U_QUEUE" "$G_QUEUE" 4711
    fi
    for f in "$ROOT"/bin/*; do
        [ -f "$f" ] || continue
        [ "${f##*/}" = queue-inject ] && continue
        if [ -u "$f" ] || [ -g "$f" ]; then
            problem "bin/${f##*/} is setuid/setgid (only queue-inject may be)" "chmod u-s,g-s $f"
        fi
        own=$(stat -c %U "$f")
        [ "$own" = "$U_ROOT" ] || problem "bin/${f##*/} is owned by $own, should be $U_ROOT" "chown $U_ROOT:$G_ROOT $f"
        case $(stat -c %a "$f") in
        *[2367]?|*[2367]) problem "bin/${f##*/} is group- or world-writable" "chmod 755 $f" ;;
        esac
    done
}

# ---- configuration -----------------------------------------------------
listen_line() { # key port: one ADDR:PORT ([ADDR]:PORT for IPv6) per --listen address
    line="$1 ="
    for a in $LISTEN; do
        case "$a" in *:*) line="$line [$a]:$2" ;; *) line="$line $a:$2" ;; esac
    done
    echo "$line"
}

write_conf() {
    c="$ROOT/conf/postern.conf"
    if [ "$CHECK" = 1 ]; then
        :
    elif [ -e "$c" ]; then
        note "conf/postern.conf exists: kept as it is"
    else
        {
            echo "# postern.conf - the instance's main settings (postern.conf(5))."
            echo "# \"key = value\", one a line; '#' starts a comment.  Every daemon reads"
            echo "# this file at start and on SIGHUP (s6-svc -h ROOT/service/NAME); an error"
            echo "# names the file and line, and the daemon refuses to start."
            echo
            echo "# the name this host gives in greetings and Received: lines"
            echo "hostname = $HOSTNAME_SET"
            echo "# mail to these domains is delivered here (the hostname always is)"
            echo "local_domains =$DOMAINS"
            echo "# clients that may relay (send to other domains) without logging in"
            echo "relay_networks = 127.0.0.0/8 ::1/128"
            echo
            echo "# listening addresses (ADDR:PORT, IPv6 as [ADDR]:PORT, several allowed)"
            for kv in $(echo "$PORTS" | tr ',' ' '); do
                listen_line "${kv%%=*}_listen" "${kv#*=}"
            done
            echo
            echo "# limits (defaults shown)"
            echo "#max_message_size = 25M"
            echo "#max_recipients = 100"
            echo "#max_sessions = 100"
            echo "#max_sessions_per_client = 50"
            echo "#session_timeout = 5m"
            echo "#max_errors = 20"
            echo "#max_received = 100"
            echo "#queue_lifetime = 5d"
            echo "#auth_concurrency = 2"
            echo "#local_concurrency = 10"
            echo "#local_per_recipient = 2"
            echo "#remote_concurrency = 20"
            echo "#remote_per_domain = 5"
            echo "#remote_reuse_time = 2s"
            echo "#mailbox_quota = 0"
            echo
            echo "# security (comments go on lines of their own)"
            echo "# argon2id cost of new passwords: interactive, moderate or sensitive"
            echo "#pwhash_level = interactive"
            echo "# POP3 logins without TLS: loopback, always or never"
            echo "#pop3_plaintext_auth = loopback"
            echo "#tls_cert = $ROOT/conf/tls/cert.pem"
            echo "#tls_key = $ROOT/conf/tls/key.pem"
            if [ "$ISROOT" = 0 ]; then
                echo
                echo "# set up by an ordinary user: every part runs as $U_ROOT"
                for k in smtp queue auth pop3 tls remote; do echo "user_$k = $U_ROOT"; done
            fi
        } > "$c.new" || die "cannot write $c.new"
        mv -f "$c.new" "$c" || die "cannot rename $c.new"
        note "wrote conf/postern.conf"
    fi
    if [ "$CHECK" = 0 ] && [ ! -e "$ROOT/conf/aliases" ]; then
        {
            echo "# aliases - \"name: address, address, ...\" (postern-aliases(5))."
            echo "# local-deliverer expands them; smtp-listener accepts RCPT for their names."
            echo "# Point postmaster and abuse at a real mailbox (a postern user name)."
            echo "postmaster: $POSTMASTER"
            echo "abuse: $POSTMASTER"
        } > "$ROOT/conf/aliases"
        [ "$POSTMASTER" != root ] || note "postmaster and abuse point at 'root' (conf/aliases): add a postern user and point them there, or mail to postmaster bounces"
    fi
    if [ "$CHECK" = 0 ] && [ ! -e "$ROOT/conf/recipients" ]; then
        printf '# recipients - written by postern-user; one user or alias name a line\npostmaster\nabuse\n' > "$ROOT/conf/recipients"
    fi
    want f "$ROOT/conf/postern.conf" "$U_ROOT" "$G_ROOT" 644
    want f "$ROOT/conf/aliases" "$U_ROOT" "$G_ROOT" 644
    want f "$ROOT/conf/recipients" "$U_ROOT" "$G_ROOT" 644
    want f "$ROOT/conf/mailboxes" "$U_ROOT" "$G_ROOT" 644
    want f "$ROOT/conf/users" "$U_AUTH" "$G_AUTH" 600
}

write_tls() {
    k="$ROOT/conf/tls/key.pem"; c="$ROOT/conf/tls/cert.pem"
    if [ "$CHECK" = 0 ] && [ ! -e "$k" ] && [ ! -e "$c" ]; then
        # created 0600 from the start: never readable by anyone else
        ( umask 077
          openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
            -subj "/CN=$HOSTNAME_SET" -addext "subjectAltName=DNS:$HOSTNAME_SET" \
            -keyout "$k.new" -out "$c.new" >/dev/null 2>&1 ) || die "openssl req failed"
        chown "$U_TLS:$G_TLS" "$k.new" && mv -f "$k.new" "$k" && mv -f "$c.new" "$c" || die "cannot install the certificate"
        note "made a self-signed certificate for $HOSTNAME_SET (conf/tls/cert.pem); replace it with a real one"
    fi
    if [ -e "$k" ] || [ "$CHECK" = 1 ]; then want f "$k" "$U_TLS" "$G_TLS" 600; fi
    if [ -e "$c" ] || [ "$CHECK" = 1 ]; then want f "$c" "$U_ROOT" "$G_ROOT" 644; fi
    if [ "$CHECK" = 1 ] && [ -f "$c" ] && ! openssl x509 -in "$c" -noout 2>/dev/null; then
        problem "conf/tls/cert.pem is not a PEM certificate" "install a certificate there (or remove cert.pem and key.pem and run $prog to make a self-signed one)"
    fi
}

# the certificates and keys as tls-proxy loads them (tls-proxy -c: a key
# that does not match, a certificate expired, not yet valid, or expiring
# within 14 days); after check_conf, which reports a bad postern.conf
check_tls() {
    tp=""
    if [ -x "$SRC/tls-proxy" ]; then tp="$SRC/tls-proxy"
    elif [ -x "$ROOT/bin/tls-proxy" ]; then tp="$ROOT/bin/tls-proxy"; fi
    [ -n "$tp" ] && [ -f "$ROOT/conf/postern.conf" ] || return 0
    out=$("$tp" -c "$ROOT" 2>/dev/null)
    oldifs=$IFS; IFS='
'
    for line in $out; do
        case "$line" in
        *": warning: "*)
            echo "$prog: warning: ${line%%: warning: *}: ${line#*: warning: }"
            echo "    fix: renew it and put the new certificate (and key) in its place; tls-proxy uses new files from the next connection" ;;
        *) problem "$line" "install a valid certificate with its own key there (tls-proxy uses new files from the next connection), or remove cert.pem and key.pem and run $prog --root $ROOT for a self-signed pair" ;;
        esac
    done
    IFS=$oldifs
}

check_conf() {
    c="$ROOT/conf/postern.conf"
    [ -f "$c" ] || return 0
    # postern.conf, conf/aliases and conf/routes through the daemons' own
    # parsers (postern-confcheck: one "file:line: what" a bad file); the one
    # beside this script first, of the same build
    cc=""
    if [ -x "$SRC/postern-confcheck" ]; then cc="$SRC/postern-confcheck"
    elif [ -x "$ROOT/bin/postern-confcheck" ]; then cc="$ROOT/bin/postern-confcheck"; fi
    if [ -n "$cc" ] && ! out=$("$cc" "$ROOT" 2>&1); then
        oldifs=$IFS; IFS='
'
        for line in $out; do
            case "$line" in
            */conf/aliases:*) problem "$line" "edit that line of conf/aliases (postern-aliases(5))" ;;
            */conf/routes:*) problem "$line" "edit that line of conf/routes (postern-routes(5))" ;;
            *) problem "$line" "edit conf/postern.conf at that line (postern.conf(5) lists the settings)" ;;
            esac
        done
        IFS=$oldifs
    fi
    # conf/aliases: "name: addr, addr" (only its shape: without
    # postern-confcheck, as a fallback)
    if [ -z "$cc" ] && [ -f "$ROOT/conf/aliases" ]; then
        out=$(awk '/^[ \t]*(#|$)/ { next }
             !/^[A-Za-z0-9._+-]+:[ \t]*[^ \t,][^,]*(,[ \t]*[^ \t,][^,]*)*[ \t]*$/ {
                 printf "conf/aliases:%d: not \"name: address, address, ...\"\n", NR }' \
            "$ROOT/conf/aliases")
        oldifs=$IFS; IFS='
'
        for line in $out; do problem "$line" "edit that line of conf/aliases"; done
        IFS=$oldifs
    fi
    # where postmaster mail goes: a warning (a new instance has no users yet)
    if [ -f "$ROOT/conf/aliases" ]; then
        pm=$(sed -n 's/^postmaster:[ \t]*//p' "$ROOT/conf/aliases" | head -1)
        for t in $(echo "$pm" | tr ',' ' '); do
            case "$t" in *@*) continue ;; esac
            grep -q "^$t:" "$ROOT/conf/mailboxes" 2>/dev/null && continue
            grep -q "^$t:" "$ROOT/conf/aliases" 2>/dev/null && continue
            echo "$prog: warning: the postmaster alias points at '$t', which is not a postern user: mail to postmaster bounces"
            if [ "$t" = root ]; then
                echo "    fix: $ROOT/bin/postern-user --root $ROOT add NAME, then set 'postmaster: NAME' (and abuse) in conf/aliases"
            else
                echo "    fix: $ROOT/bin/postern-user --root $ROOT add $t (or point 'postmaster:' and 'abuse:' in conf/aliases at an existing user)"
            fi
        done
    fi
    # a user whose name is also an alias gets no mail of its own (the alias
    # is looked up first, as in Postfix) unless the alias lists the name
    # itself (keep a copy): a warning, as the operator may mean it
    if [ -f "$ROOT/conf/aliases" ] && [ -f "$ROOT/conf/mailboxes" ]; then
        shadowed=$(awk -F: '
            FNR == NR { if ($0 !~ /^[ \t]*(#|$)/) user[tolower($1)] = 1; next }
            /^[ \t]*(#|$)/ { next }
            /^[ \t]/ { if (cur != "") t[cur] = t[cur] "," $0; next }
            { cur = tolower($1); sub(/^[^:]*:/, ""); t[cur] = $0 }
            END {
                for (a in t) {
                    if (!(a in user)) continue
                    n = split(tolower(t[a]), m, ",")
                    self = 0
                    for (i = 1; i <= n; i++) { gsub(/^[ \t]+|[ \t]+$/, "", m[i]); if (m[i] == a) self = 1 }
                    if (!self) print a
                }
            }' "$ROOT/conf/mailboxes" "$ROOT/conf/aliases")
        for a in $shadowed; do
            echo "$prog: warning: '$a' is both a postern user and an alias: mail to $a follows the alias and never reaches the user's own mailbox"
            echo "    fix: remove or rename the alias '$a:' in conf/aliases, or add $a to its targets to keep a copy ('$a: $a, ...')"
        done
    fi
    for f in mailboxes users; do
        [ -f "$ROOT/conf/$f" ] || continue
        n=4; [ $f = users ] && n=5
        bad=$(awk -F: -v n=$n '/^[ \t]*(#|$)/ { next } NF != n || $2 !~ /^[0-9]+$/ || $3 !~ /^[0-9]+$/ || $4 !~ /^\// { print NR; exit }' "$ROOT/conf/$f")
        [ -z "$bad" ] || problem "conf/$f:$bad: malformed line (want $( [ $f = users ] && echo 'name:uid:gid:maildir:hash' || echo 'name:uid:gid:maildir'))" "repair it with postern-user (or edit conf/$f)"
    done
}

# each user's Maildir as local-deliverer and the POP3 mailbox process need
# it (postern-users(5)): a directory (no symlink) owned by the user's uid,
# not writable by others, with tmp/, new/ and cur/ alike; and the home
# ROOT/mail/NAME that postern-user made, when the Maildir is in it.  Only
# reported: root changes nothing inside a tree its user controls.
check_mailboxes() {
    [ -f "$ROOT/conf/mailboxes" ] || return 0
    while IFS=: read -r mb_name mb_uid mb_gid mb_dir mb_rest; do
        case "$mb_name" in ''|'#'*) continue ;; esac
        case "$mb_uid:$mb_gid" in *[!0-9:]*|:*|*:) continue ;; esac   # malformed: reported above
        case "$mb_dir" in /*) ;; *) continue ;; esac
        if [ "$mb_uid" -eq 0 ] || [ "$mb_gid" -eq 0 ]; then
            problem "user $mb_name has uid or gid 0 in conf/mailboxes: nothing delivers or serves mail as root (POP3: \"Mailbox misconfigured\")" \
                "$ROOT/bin/postern-user --root $ROOT del $mb_name, then add it again (with --uid/--gid or --unix-account of a user other than root)"
            continue
        fi
        mb_top=$mb_dir
        [ "$mb_dir" = "$ROOT/mail/$mb_name/Maildir" ] && mb_top="$ROOT/mail/$mb_name"
        if [ ! -d "$mb_dir" ] && [ ! -L "$mb_dir" ]; then
            # a Maildir alone is made as its user at the next login or
            # delivery; a missing directory above it is not
            [ -d "${mb_dir%/*}" ] && continue
            if [ "$mb_top" != "$mb_dir" ]; then mb_mk="$mb_top $mb_dir"; else mb_mk=$mb_dir; fi
            problem "the Maildir of user $mb_name, $mb_dir, is missing with the directory it is in (POP3 logins fail with \"Cannot open the mailbox\")" \
                "install -d -o $mb_uid -g $mb_gid -m 700 $mb_mk $mb_dir/tmp $mb_dir/new $mb_dir/cur"
            continue
        fi
        mb_bad=""
        for p in "$mb_top" "$mb_dir" "$mb_dir/tmp" "$mb_dir/new" "$mb_dir/cur"; do
            if [ -L "$p" ] || [ ! -d "$p" ]; then
                mb_bad="$p is not a directory (or is a symbolic link): deliveries to it are deferred, POP3 logins fail"
                mb_fix="mv $p $p.bad && install -d -o $mb_uid -g $mb_gid -m 700 $p"; break
            fi
            cur=$(stat -c '%u %A' "$p")
            if [ "${cur% *}" != "$mb_uid" ]; then
                mb_bad="$p is owned by uid ${cur% *}, not $mb_uid: deliveries to it are deferred (\"Maildir delivery failed\"), POP3 logins fail"
                mb_fix="chown -R $mb_uid:$mb_gid $mb_top"; break
            fi
            case "${cur#* }" in
            ????????w?) mb_bad="$p is writable by others: anyone could take or plant messages"
                mb_fix="chmod -R o-w $mb_top"; break ;;
            esac
        done
        [ -n "$mb_bad" ] || continue
        problem "the Maildir of user $mb_name: $mb_bad" "$mb_fix"
    done < "$ROOT/conf/mailboxes"
}

# ---- the s6 service tree -----------------------------------------------
# The service directories are made from three templates, the same for every
# daemon: service/run, service/notification-fd and service/log/run in the
# source tree, PREFIX/share/postern/service after `make install`.  Where:
# beside the programs of an installed copy (PREFIX/lib/postern/bin), else
# the source tree's service/ beside bin/, else that of the tree this copy
# was built from.  A directory counts only if it holds all three and its run
# names @PROG@ (not an s6 scan directory that happens to be there).
TEMPLATES=""
find_templates() {
    for t in "$SRC/../../../share/postern/service" "$SRC/../service" ${BUILT_FROM:+"$BUILT_FROM/service"}; do
        if [ -f "$t/run" ] && [ -f "$t/notification-fd" ] && [ -f "$t/log/run" ] &&
           grep -q '@PROG@' "$t/run"; then
            TEMPLATES=$(cd "$t" && pwd) && return 0
        fi
    done
    die "no s6 service templates (run, notification-fd, log/run) in $SRC/../../../share/postern/service or $SRC/../service${BUILT_FROM:+ or $BUILT_FROM/service}: run the postern-setup of the build's bin/ or of PREFIX/lib/postern/bin"
}

# sed replacement text: \, & and the delimiter | stand for themselves (ROOT
# cannot hold them, see the check of ROOT above, but a user name might)
sed_text() { printf '%s\n' "$1" | sed 's/[\\&|]/\\&/g'; }

# render TEMPLATE PROG: the template with @PROG@, @ROOT@ and @SETUIDGID@
# ("s6-setuidgid postern-log " as root, nothing otherwise) filled in
render() {
    if [ "$ISROOT" = 1 ]; then drop="s6-setuidgid $U_LOG "; else drop=""; fi
    out=$(sed -e "s|@PROG@|$(sed_text "$2")|g" -e "s|@ROOT@|$(sed_text "$ROOT")|g" \
              -e "s|@SETUIDGID@|$(sed_text "$drop")|g" "$TEMPLATES/$1") ||
        die "cannot read $TEMPLATES/$1"
    case "$out" in *@[[:upper:]]*@*) die "$TEMPLATES/$1: an unknown @PLACEHOLDER@ is left" ;; esac
    printf '%s\n' "$out"
}

put() { # path mode content: write only if different
    if [ ! -f "$1" ] || [ "$(cat "$1")" != "$3" ]; then
        [ -f "$1" ] && CHANGED="$CHANGED ${1#"$ROOT"/}"
        printf '%s\n' "$3" > "$1.new" && chmod "$2" "$1.new" && mv -f "$1.new" "$1" || die "cannot write $1"
    fi
    chmod "$2" "$1"
}

write_services() {
    for s in $SERVICES; do
        [ -x "$ROOT/bin/$s" ] || continue
        d="$ROOT/service/$s"
        if [ "$CHECK" = 1 ]; then
            for f in run notification-fd log/run; do
                [ -f "$d/$f" ] || problem "service/$s/$f is missing" "run: $prog --root $ROOT"
            done
            if [ -f "$d/run" ] && ! grep -q "exec $ROOT/bin/$s -d 3 $ROOT\$" "$d/run"; then
                problem "service/$s/run does not run $ROOT/bin/$s for this ROOT" "run: $prog --root $ROOT (it rewrites the run scripts)"
            fi
            continue
        fi
        mkdir -p "$d/log" || die "mkdir $d/log failed"
        text=$(render run "$s") || exit 100
        put "$d/run" 755 "$text"
        text=$(render notification-fd "$s") || exit 100
        put "$d/notification-fd" 644 "$text"
        text=$(render log/run "$s") || exit 100
        put "$d/log/run" 755 "$text"
    done
}

# ROOT/postern.service: a systemd unit that runs this instance's tree, so
# that on a systemd host (Debian's default) it starts at boot. Rewritten on
# every run, like the run scripts (it holds nothing but ROOT and where s6
# is). Its stop: ExecStop tells s6-svscan to bring the tree down
# (s6-svscanctl -t, as skarnet's own unit does), then systemd sends SIGTERM
# to every process of the unit at once (KillMode=control-group); each
# daemon, session and delivery drains on it (smtp-listener(8),
# pop3-listener(8), local-deliverer(8), remote-deliverer(8)). Without the
# -t first, s6-svscan could take the death of a supervisor the SIGTERM had
# killed before its own SIGTERM, start it again, with its daemon, and go
# on running: 2 stops in 33 of a start/stop loop then waited for
# TimeoutStopSec and its SIGKILL. With "t" in its control FIFO before
# any SIGTERM is sent, s6-svscan reads it with the first death.
# TimeoutStopSec=45: longer than the longest drain (a relay in flight gets
# up to 30 s from the SIGTERM, remote-deliverer(8); an SMTP session 10 s),
# so systemd's SIGKILL never cuts one and the stop is never a "timeout".
write_unit() {
    u="$ROOT/postern.service"
    if [ "$CHECK" = 1 ]; then
        [ -f "$u" ] || problem "postern.service (the systemd unit) is missing" "run: $prog --root $ROOT"
        return
    fi
    svscan=$(command -v s6-svscan 2>/dev/null) || svscan=/usr/bin/s6-svscan
    svc=$(command -v s6-svc 2>/dev/null) || svc=/usr/bin/s6-svc
    svscanctl=$(command -v s6-svscanctl 2>/dev/null) || svscanctl=/usr/bin/s6-svscanctl
    text="# postern.service - the systemd unit of the postern instance in $ROOT,
# written by postern-setup (and rewritten each time it runs). To have the
# mail host start at boot:   systemctl enable --now $u
# systemctl stop tells s6-svscan to stop (ExecStop), then sends SIGTERM to
# all its processes: an SMTP session finishes the message it is receiving
# and answers 421, a POP3 session ends without QUIT (so deletes nothing),
# deliveries in flight finish, and every process ends.
# systemctl reload has every daemon read postern.conf again (s6-svc -h).
[Unit]
Description=postern mail host in $ROOT
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=$svscan $ROOT/service"
    for s in $SERVICES; do
        [ -d "$ROOT/service/$s" ] && text="$text
ExecReload=$svc -h $ROOT/service/$s"
    done
    text="$text
ExecStop=$svscanctl -t $ROOT/service
Restart=always
TimeoutStopSec=45

[Install]
WantedBy=multi-user.target"
    put "$u" 644 "$text"
}

# every directory above ROOT must let the system users through (o+x)
check_parents() {
    d=$(dirname "$ROOT")
    while :; do
        perm=$(stat -c '%A' "$d" 2>/dev/null || echo ----------x)
        case "$perm" in ?????????[xt]) searchable=1 ;; *) searchable=0 ;; esac
        if [ "$searchable" = 0 ]; then
            if [ "$CHECK" = 1 ]; then
                problem "$d (above ROOT) is not searchable by others: the postern users cannot reach ROOT" "chmod o+x $d"
            else
                echo "$prog: warning: $d is not searchable by others (chmod o+x $d), the postern users cannot reach ROOT" >&2
            fi
        fi
        [ "$d" = / ] && break
        d=$(dirname "$d")
    done
}

# the programs of ROOT/bin that running processes run an older copy of
# (an upgrade replaced them; a daemon keeps its image until it restarts):
# each process whose executable was ROOT/bin/NAME, compared by content
# with ROOT/bin/NAME now, once per executable
stale_programs() {
    STALE=""; seen=""
    for e in /proc/[0-9]*/exe; do
        t=$(readlink "$e" 2>/dev/null) || continue
        case "$t" in "$ROOT/bin/"*) ;; *) continue ;; esac
        n=${t#"$ROOT/bin/"}; n=${n% (deleted)}
        case "$n" in */*|.*) continue ;; esac
        ino=$(stat -L -c %d:%i "$e" 2>/dev/null) || continue
        case " $seen " in *" $ino "*) continue ;; esac
        seen="$seen $ino"
        cmp -s "$e" "$ROOT/bin/$n"
        [ $? = 1 ] || continue          # 2: the process has just ended
        case " $STALE " in *" $n "*) ;; *) STALE="$STALE $n" ;; esac
    done
}

# ---- main --------------------------------------------------------------
# before anything changes: the templates the service tree is written from,
# each one fillable (no unknown @PLACEHOLDER@)
if [ "$CHECK" = 0 ]; then
    find_templates
    for f in run notification-fd log/run; do render "$f" smtp-listener >/dev/null || exit 100; done
fi
[ "$ISROOT" = 1 ] && check_parents
ensure_users
tree
if [ "$CHECK" = 0 ]; then install_programs; fi
check_programs
write_conf
write_tls
if [ "$CHECK" = 1 ]; then check_conf; check_mailboxes; check_tls; fi
write_services
write_unit

RESTART="for s in $ROOT/service/*; do s6-svc -r \$s; done"
if [ "$CHECK" = 1 ]; then
    stale_programs
    if [ -n "$STALE" ]; then
        echo "$prog: warning: running processes still run the old copy of$STALE (ROOT/bin was upgraded since they started)"
        echo "    fix: $RESTART"
    fi
    if [ "$PROBLEMS" -gt 0 ]; then
        echo "$prog: $PROBLEMS problem(s) in $ROOT"
        exit 1
    fi
    echo "$prog: $ROOT: ok"
    exit 0
fi
[ "$PROBLEMS" = 0 ] || exit 1
# services already running (a repair, or an upgrade) keep the programs they
# were started with: say so, rather than "start it"
RUNNING=""
for s in $SERVICES; do
    [ "$(s6-svstat -o up "$ROOT/service/$s" 2>/dev/null)" = true ] && RUNNING="$RUNNING $s"
done
if [ -z "$RUNNING" ]; then
    note "instance ready in $ROOT; start it with: s6-svscan $ROOT/service"
    exit 0
fi
stale_programs
if [ -n "$STALE$CHANGED" ]; then
    [ -z "$STALE" ] || note "running processes still run the old copy of$STALE"
    [ -z "$CHANGED" ] || note "rewritten:$CHANGED"
    note "instance ready in $ROOT; the running services ($(echo $RUNNING)) use the new programs and run scripts once they restart: $RESTART"
else
    note "instance ready in $ROOT; running:$RUNNING (nothing to restart)"
fi
exit 0
