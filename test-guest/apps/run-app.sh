#!/bin/sh
# Runs one of the test guest's real programs (test-guest/apps/README.md) until the
# VM stops, printing the program's own checks to the console as
#   APP <name> <progress> <check>
# where <progress> only grows and <check> is the program's own evidence that
# its data are right (checksums it recomputes, "ok" from an integrity check).
app="$1"
# The Debian programs are called by full path: busybox's shell runs its own
# applet of the same name (xz, sort) whatever PATH says.
export PATH=/usr/bin:/bin HOME=/tmp TERM=dumb
mkdir -p /tmp/app && cd /tmp/app || exit 1
case "$app" in
  vim)
    # A typist editing a 1 MB document in vim, autosaving (:w) every 5 s;
    # vim also writes its swap file. A round is 60 s of typing, then :wq.
    apptools gen-lines 20000 7 >doc.txt
    round=0
    while :; do
      round=$((round + 1))
      apptools keys 60 | /usr/bin/vim.tiny -u NONE -i NONE -N doc.txt >/dev/null 2>&1
      echo "APP vim $round $(wc -c <doc.txt) $(md5sum <doc.txt | cut -c1-8)"
    done
    ;;
  flac)
    # A player: flac decodes a 20 s tune to PCM at the sound card's pace
    # (44.1 kHz, 16-bit stereo = 176 400 B/s) into a 4 s ring.
    # One sink for the whole stream, so its byte count only grows.
    while :; do /usr/bin/flac -d -c -s /usr/share/presync/song.flac; done | apptools sink 176400 705600 flac
    ;;
  vpx)
    # A movie: vpxdec decodes a 10 s 320×180 VP8 clip to I420 frames at 24 fps
    # (86 400 B a frame) into a double-buffered frame ring. (640×360 did not
    # keep 24 fps under TCG on a loaded host.)
    while :; do /usr/bin/vpxdec --i420 -o - /usr/share/presync/clip.webm; done | apptools sink 2073600 172800 vpx
    ;;
  xz)
    # A compressor: xz -4 (4 MiB dictionary, ~48 MiB of match finder) on a
    # 4 MB text file, then decompress and compare checksums.
    apptools gen-lines 80000 3 >data.txt
    want="$(md5sum <data.txt | cut -c1-32)"
    round=0
    while :; do
      round=$((round + 1))
      /usr/bin/xz -4 -T1 -c data.txt >data.xz
      got="$(/usr/bin/xz -d -c data.xz | md5sum | cut -c1-32)"
      [ "$got" = "$want" ] && ok=ok || ok=FAIL
      echo "APP xz $round $ok $(wc -c <data.xz)"
    done
    ;;
  sort)
    # A sorter: coreutils sort on 200 000 lines (10 MB) with a 16 MiB buffer,
    # then sort -c checks the order and the checksum must not change.
    apptools gen-lines 200000 5 >lines.txt
    round=0
    first=""
    while :; do
      round=$((round + 1))
      /usr/bin/sort -S 16M -T /tmp/app lines.txt >sorted.txt
      sum="$(md5sum <sorted.txt | cut -c1-8)"
      [ -z "$first" ] && first="$sum"
      /usr/bin/sort -c sorted.txt && [ "$sum" = "$first" ] && ok=ok || ok=FAIL
      echo "APP sort $round $ok $sum"
    done
    ;;
  sqlite)
    # A database: one sqlite3 process; every second a transaction inserts
    # 2 000 rows of 200 B, updates 500, deletes the oldest beyond 40 000;
    # every 20th VACUUMs; every 5th checks integrity and prints a count.
    i=0
    {
      echo "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, k INTEGER, v BLOB); CREATE INDEX IF NOT EXISTS tk ON t(k);"
      while :; do
        i=$((i + 1))
        echo "BEGIN; INSERT INTO t(k, v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<2000) SELECT abs(random()) % 100000, randomblob(200) FROM c;"
        echo "UPDATE t SET v = randomblob(200), k = k + 1 WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 500);"
        echo "DELETE FROM t WHERE id <= (SELECT max(id) FROM t) - 40000; COMMIT;"
        [ $((i % 20)) -eq 0 ] && echo "VACUUM;"
        [ $((i % 5)) -eq 0 ] && echo "SELECT 'APP sqlite ' || $i || ' ' || (SELECT integrity_check FROM pragma_integrity_check) || ' ' || count(*) FROM t;"
        sleep 1
      done
    } | /usr/bin/sqlite3 -batch db.sqlite
    ;;
  *)
    echo "run-app: unknown program '$app' (vim, flac, vpx, xz, sort, sqlite)"
    exit 2
    ;;
esac
