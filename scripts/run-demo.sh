#!/bin/sh
# run-demo.sh - `make run`: set up a demo instance in ./run (loopback only,
# unprivileged ports), add the user "demo" (password "demo"), say how to
# talk to it, and run s6-svscan in the foreground.  Ctrl-C stops it all.
#
#   sh scripts/run-demo.sh BINDIR
set -u
BIN=${1:-$(pwd)/bin}
ROOT=$(pwd)/run
[ -x "$BIN/postern-setup" ] || { echo "run-demo: $BIN/postern-setup is missing: run make first" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
    echo "run-demo: not root: every part will run as $(id -un), without privilege separation"
fi
"$BIN/postern-setup" --root "$ROOT" --hostname mail.example.test \
    --domain localhost --domain example.test --listen 127.0.0.1 --postmaster demo \
    --ports smtp=2525,submission=2587,smtps=2465,pop3=2110,pop3s=2995 || exit 1

if [ -x "$ROOT/bin/postern-user" ]; then
    if POSTERN_ROOT="$ROOT" "$ROOT/bin/postern-user" --root "$ROOT" list 2>/dev/null | grep -q '^demo\b'; then
        :
    else
        echo demo | "$ROOT/bin/postern-user" --root "$ROOT" add demo \
            || echo "run-demo: could not add the user demo (see above)" >&2
    fi
else
    echo "run-demo: postern-user is not built yet: no demo user" >&2
fi

missing=""
for s in smtp-listener pop3-listener auth-checker queue-manager; do
    [ -d "$ROOT/service/$s" ] || missing="$missing $s"
done

cat <<EOF

postern demo instance in $ROOT (only on 127.0.0.1)
  SMTP        telnet 127.0.0.1 2525        submission  telnet 127.0.0.1 2587
  SMTPS       openssl s_client -quiet -connect 127.0.0.1:2465
  POP3        telnet 127.0.0.1 2110
  POP3S       openssl s_client -quiet -connect 127.0.0.1:2995
  user demo, password demo; local domains: localhost, example.test

A session to try (type the lines without "C: "):
  telnet 127.0.0.1 2525
  C: HELO client.example.test
  C: MAIL FROM:<you@example.test>
  C: RCPT TO:<demo@example.test>
  C: DATA
  C: Subject: hello
  C:
  C: it works
  C: .
  C: QUIT
  telnet 127.0.0.1 2110
  C: USER demo
  C: PASS demo
  C: LIST
  C: RETR 1
  C: QUIT

Manage it from another terminal:
  for s in $ROOT/service/*; do echo "\$s: \$(s6-svstat \$s)"; done
  s6-svc -r $ROOT/service/smtp-listener      (restart one service)
  tail -f $ROOT/log/*/current
  $ROOT/bin/postern-queue --root $ROOT list
EOF
[ -z "$missing" ] || echo "not built yet, so not running:$missing"
echo
echo "Running s6-svscan $ROOT/service in the foreground; Ctrl-C stops everything."

# s6-svscan brings the whole tree down on SIGINT (Ctrl-C) and SIGTERM
exec s6-svscan "$ROOT/service"
