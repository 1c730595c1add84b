"""Which b-trees the frames of an embedded store's WAL belong to, per commit: a diagnostic for the ledger's
write cost (BENCHMARKS.md, gateway). Usage: wal_frames.py DIR, where DIR holds copies of a running store's
`tenantry.db` and `tenantry.db-wal` taken together (e.g. during `tenantry bench gateway`, whose data dir is
$TMPDIR/tenantry-bench-<pid>). Reads only the WAL's current generation; replays it into a scratch copy
(DIR/replay) to map page numbers to b-trees with SQLite's dbstat table."""
import collections, sqlite3, struct, sys, shutil, os
d = sys.argv[1]
wal = open(os.path.join(d, "tenantry.db-wal"), "rb").read()
magic, ver, page_size, ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", wal[:32])
frames = []
off = 32
while off + 24 + page_size <= len(wal):
    pgno, commit, s1, s2 = struct.unpack(">4I", wal[off:off + 16])
    if (s1, s2) != (salt1, salt2):
        break
    frames.append((pgno, commit))
    off += 24 + page_size
commits = sum(1 for _, c in frames if c)
# Replay into a copy to map pages.
tmp = os.path.join(d, "replay"); os.makedirs(tmp, exist_ok=True)
shutil.copy(os.path.join(d, "tenantry.db"), os.path.join(tmp, "tenantry.db"))
shutil.copy(os.path.join(d, "tenantry.db-wal"), os.path.join(tmp, "tenantry.db-wal"))
con = sqlite3.connect(os.path.join(tmp, "tenantry.db"))
owner = {pg: (name, kind) for name, pg, kind in con.execute("select name, pageno, pagetype from dbstat")}
by = collections.Counter()
for pgno, _ in frames:
    if pgno == 1:
        by[("page 1", "")] += 1
    else:
        by[owner.get(pgno, ("?", ""))] += 1
print(f"page size {page_size}, {len(frames)} frames, {commits} commits, {len(frames)/max(commits,1):.2f} frames/commit")
for (name, kind), n in by.most_common(25):
    print(f"{n/max(commits,1):8.3f}  {name} {kind}")
