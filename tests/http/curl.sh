#!/usr/bin/env bash
# Braid-HTTP with curl against a running daemon: GET, HEAD, subscribe, PUT
# (one patch, several, a whole body, binary), history, and the error cases.
# Every check prints one line; the first failure exits non-zero.
#
#   tests/http/curl.sh BASE TOKEN DIR
#     BASE   http://127.0.0.1:PORT/FOLDER   (the folder "docs", say)
#     TOKEN  the node's HTTP token (HOME/http.token)
#     DIR    the folder's directory on this machine (to check the disk)
#     OUTSIDE a directory outside the folder (nothing may appear in it)
set -uo pipefail
BASE=$1 TOKEN=$2 DIR=$3 OUTSIDE=$4
AUTH=(-H "Authorization: Bearer $TOKEN")
# This run's name for its edits (a client names its versions PEER-N).
P="curl$$"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
# status CODE, then curl arguments: the status must be CODE.
status() {
  local want=$1; shift
  local got
  got=$(curl -s -o "$TMP/body" -D "$TMP/head" -w '%{http_code}' "$@")
  [ "$got" = "$want" ] || fail "curl $* answered $got, not $want: $(head -c 300 "$TMP/body")"
}
header() { grep -i "^$1:" "$TMP/head" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
wait_for() { # file content
  for _ in $(seq 1 200); do [ "$(cat "$1" 2>/dev/null)" = "$2" ] && return 0; sleep 0.05; done
  fail "$1 holds $(cat "$1" 2>/dev/null | head -c 200), not $2"
}

# --- access ---
status 401 "$BASE/"
[ ! -s "$TMP/body" ] || fail "a 401 says nothing"
status 401 -H "Authorization: Bearer wrong" "$BASE/"
status 401 "${BASE%/*}/?token=wrong"
status 303 "${BASE%/*}/?token=$TOKEN"
cookie=$(header set-cookie | cut -d';' -f1)
status 200 -H "Cookie: $cookie" "$BASE/"
ok "access: no token or a wrong one is 401; /?token= sets a cookie that opens the rest"
status 200 "${AUTH[@]}" "${BASE%/*}/"
grep -q '<title>fsync</title>' "$TMP/body" || fail "the page"
status 200 "${AUTH[@]}" "${BASE%/*}/.fsync/status"
grep -q '"http"' "$TMP/body" || fail "status has the http address"
ok "the page and its status"

# --- GET ---
printf 'hello\n' > "$DIR/c.txt"
for _ in $(seq 1 200); do curl -s "${AUTH[@]}" "$BASE/c.txt" | grep -q hello && break; sleep 0.05; done
status 200 "${AUTH[@]}" "$BASE/c.txt"
[ "$(cat "$TMP/body")" = "hello" ] || fail "GET gives the content"
v1=$(header version)
[ -n "$v1" ] && [ "$(header merge-type)" = "simpleton" ] && [ -n "$(header current-version)" ] || fail "GET headers: $(cat "$TMP/head")"
status 200 -I "${AUTH[@]}" "$BASE/c.txt"
[ "$(header version)" = "$v1" ] || fail "HEAD has the version"
status 200 "${AUTH[@]}" "$BASE/"
grep -q '"name":"c.txt"' "$TMP/body" || fail "the folder lists c.txt: $(cat "$TMP/body")"
ok "GET: content, Version, Current-Version, Merge-Type; HEAD; a directory is a JSON listing"

# --- PUT ---
status 200 -X PUT "${AUTH[@]}" -H "Version: \"$P-5\"" -H "Parents: $v1" -H "Content-Range: text [5:5]" --data-binary " world" "$BASE/c.txt"
wait_for "$DIR/c.txt" "hello world"
status 200 "${AUTH[@]}" -H "Version: \"$P-5\"" "$BASE/c.txt"
[ "$(cat "$TMP/body")" = "hello world" ] || fail "GET at the client's own version"
status 200 "${AUTH[@]}" -H "Version: $v1" "$BASE/c.txt"
[ "$(cat "$TMP/body")" = "hello" ] || fail "GET at an older version"
# The same edit again (a retry): made once.
status 200 -X PUT "${AUTH[@]}" -H "Version: \"$P-5\"" -H "Parents: $v1" -H "Content-Range: text [5:5]" --data-binary " world" "$BASE/c.txt"
# Two patches, both in the coordinates of the parents' text.
printf 'content-length: 1\r\ncontent-range: text [0:1]\r\n\r\nH\r\n\r\ncontent-length: 1\r\ncontent-range: text [11:11]\r\n\r\n!\r\n' > "$TMP/two"
status 200 -X PUT "${AUTH[@]}" -H "Version: \"$P-8\"" -H "Parents: \"$P-5\"" -H "Patches: 2" --data-binary @"$TMP/two" "$BASE/c.txt"
wait_for "$DIR/c.txt" "Hello world!"
# Concurrent: made on v1 (before curl's edits), merged with them.
status 200 -X PUT "${AUTH[@]}" -H "Parents: $v1" -H "Content-Range: text [6:6]" --data-binary $'bye\n' "$BASE/c.txt"
wait_for "$DIR/c.txt" $'Hello world!\nbye'
# A whole body: a new file; then a binary one.
status 200 -X PUT "${AUTH[@]}" --data-binary "made over HTTP" "$BASE/sub/new.txt"
wait_for "$DIR/sub/new.txt" "made over HTTP"
head -c 3000 /dev/urandom > "$TMP/blob"
status 200 -X PUT "${AUTH[@]}" -H "Merge-Type: aww" --data-binary @"$TMP/blob" "$BASE/blob.bin"
for _ in $(seq 1 200); do cmp -s "$TMP/blob" "$DIR/blob.bin" && break; sleep 0.05; done
cmp -s "$TMP/blob" "$DIR/blob.bin" || fail "a binary PUT reaches the disk"
status 206 "${AUTH[@]}" -H "Range: bytes=10-19" "$BASE/blob.bin"
cmp -s "$TMP/body" <(tail -c +11 "$TMP/blob" | head -c 10) || fail "a byte range"
ok "PUT: a patch at the client's version, a retry, Patches: 2, a concurrent edit, whole bodies, binary, Range"

# --- subscribe ---
curl -s -N "${AUTH[@]}" -H "Subscribe: true" -H 'Peer: "watcher"' -H "Heartbeats: 1" "$BASE/c.txt" > "$TMP/sub" &
sub=$!
sleep 0.5
printf 'Hello world!\nbye\nfrom the disk\n' > "$DIR/c.txt"
for _ in $(seq 1 100); do grep -q 'from the disk' "$TMP/sub" && break; sleep 0.05; done
status 200 -X PUT "${AUTH[@]}" -H 'Peer: "other"' -H "Content-Range: text [0:3]" --data-binary "" "$BASE/c.txt"
for _ in $(seq 1 100); do grep -q 'Content-Range: text \[0:3\]' "$TMP/sub" && break; sleep 0.05; done
sleep 1.5
kill $sub 2>/dev/null; wait $sub 2>/dev/null
grep -q '^HTTP 200 OK' "$TMP/sub" || fail "updates: $(head -c 500 "$TMP/sub")"
grep -q 'Content-Range: text \[17:17\]' "$TMP/sub" || fail "the disk's save as a patch: $(cat "$TMP/sub")"
grep -q 'Content-Range: text \[0:3\]' "$TMP/sub" || fail "another client's PUT as a patch: $(cat "$TMP/sub")"
[ "$(grep -c $'^\r$' "$TMP/sub")" -ge 6 ] || fail "heartbeats and separators"
ok "subscribe: a snapshot, a save on disk and another client's PUT as patches, heartbeats"
status 309 "${AUTH[@]}" -H "Subscribe: true" -H 'Parents: "nobody-1"' --max-time 2 "$BASE/c.txt"
[ "$(header retry-after)" = "1" ] || fail "309 says when to retry"
# A client back with the version it held, after a change it cannot see
# (the mode): it stays at that version, and the next update names it.
status 200 -I "${AUTH[@]}" "$BASE/c.txt"
held=$(header version)
chmod +x "$DIR/c.txt"
for _ in $(seq 1 100); do status 200 -I "${AUTH[@]}" "$BASE/c.txt"; [ "$(header version)" != "$held" ] && break; sleep 0.05; done
[ "$(header version)" != "$held" ] || fail "the mode change made no version"
curl -s -N "${AUTH[@]}" -H "Subscribe: true" -H "Parents: $held" "$BASE/c.txt" > "$TMP/back" &
back=$!
sleep 0.5
printf '%s\nafter the mode\n' "$(cat "$DIR/c.txt")" > "$DIR/c.txt"
for _ in $(seq 1 100); do grep -q 'after the mode' "$TMP/back" && break; sleep 0.05; done
kill $back 2>/dev/null; wait $back 2>/dev/null
grep -qF "Parents: $held" "$TMP/back" || fail "the update after a reconnect names the version the client held: $(cat "$TMP/back")"
ok "subscribe again from a version: only what changed since, on that version"

# --- errors: a clear status, nothing written, still serving ---
before=$(cat "$DIR/c.txt")
status 400 -X PUT "${AUTH[@]}" -H "Content-Range: text [5:999]" --data-binary "x" "$BASE/c.txt"
status 400 -X PUT "${AUTH[@]}" -H "Content-Range: bytes 0-1" --data-binary "x" "$BASE/c.txt"
status 400 -X PUT "${AUTH[@]}" -H "Content-Range: text [3:1]" --data-binary "x" "$BASE/c.txt"
status 400 -X PUT "${AUTH[@]}" -H "Content-Range: text [0:3]" --data-binary "x" "$BASE/never.txt"
status 404 "${AUTH[@]}" "$BASE/never.txt"
status 400 -X PUT "${AUTH[@]}" -H "Content-Range: text [0:0]" -H "Patches: 1" --data-binary "x" "$BASE/c.txt"
status 400 -X PUT "${AUTH[@]}" -H "Parents: not-quoted" -H "Content-Range: text [0:0]" --data-binary "x" "$BASE/c.txt"
status 400 -X PUT "${AUTH[@]}" -H 'Version: "x-0"' -H "Content-Range: text [0:0]" --data-binary "xy" "$BASE/c.txt"
status 400 -X PUT "${AUTH[@]}" -H "Patches: 2" --data-binary "content-length: 1" "$BASE/c.txt"
status 400 -X PUT "${AUTH[@]}" -H "Content-Range: text [0:0]" --data-binary $'\xff' "$BASE/c.txt"
status 309 -X PUT "${AUTH[@]}" -H 'Parents: "nobody-1"' -H "Content-Range: text [0:0]" --data-binary "x" "$BASE/c.txt"
status 409 -X PUT "${AUTH[@]}" -H "Content-Range: text [0:0]" --data-binary "x" "$BASE/blob.bin"
status 409 -X PUT "${AUTH[@]}" --data-binary "x" "$BASE/sub"
status 403 -X PUT "${AUTH[@]}" --data-binary "x" "$BASE/x.swp"
status 404 "${AUTH[@]}" "$BASE/no-such-file"
status 404 "${AUTH[@]}" "${BASE%/*}/no-such-folder/x"
status 400 "${AUTH[@]}" --path-as-is "$BASE/../etc/passwd"
status 400 "${AUTH[@]}" "$BASE/%2e%2e/%2e%2e/etc/passwd"
status 400 "${AUTH[@]}" "$BASE/a%2Fb"
status 400 "${AUTH[@]}" "$BASE/a%00b"
status 400 "${AUTH[@]}" -H "Merge-Type: dt" "$BASE/c.txt"
status 405 -X DELETE "${AUTH[@]}" "$BASE/c.txt"
ln -s "$OUTSIDE" "$DIR/out"
sleep 0.3
status 404 "${AUTH[@]}" "$BASE/out/secret.txt"
status 409 -X PUT "${AUTH[@]}" --data-binary "x" "$BASE/out/planted.txt"
[ ! -e "$OUTSIDE/planted.txt" ] || fail "a PUT through a symlink wrote outside the folder"
head -c $((65 << 20)) /dev/zero > "$TMP/huge"
status 413 -X PUT "${AUTH[@]}" --data-binary @"$TMP/huge" "$BASE/huge.bin"
{ printf 'Parents: "'; head -c 200000 /dev/zero | tr '\0' 'a'; printf '"\n'; } > "$TMP/long-header"
code=$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" -H @"$TMP/long-header" "$BASE/c.txt")
[ "$code" = 431 ] || fail "a huge header: $code"
[ "$(cat "$DIR/c.txt")" = "$before" ] || fail "a refused request changed the file"
[ ! -e "$DIR/huge.bin" ] && [ ! -e "$DIR/x.swp" ] && [ ! -e "$DIR/never.txt" ] || fail "a refused request wrote a file"
status 200 "${AUTH[@]}" "$BASE/c.txt"
ok "errors: bad ranges, versions, bodies, kinds, ignored names, traversal, symlinks out, huge bodies and headers; nothing written; still serving"

# --- history over HTTP ---
status 200 "${AUTH[@]}" "${BASE%/*}/.fsync/log/${BASE##*/}/c.txt"
grep -q '"version"' "$TMP/body" || fail "the log"
status 200 -X POST "${AUTH[@]}" "${BASE%/*}/.fsync/restore/${BASE##*/}/c.txt?version=$(echo "$v1" | tr -d '"')"
wait_for "$DIR/c.txt" "hello"
ok "history: the log, and a restore of an old version"
