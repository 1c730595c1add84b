# Usage: python3 scifact_slice.py ../shared/data/scifact /tmp/minilm-slice   (for BENCHMARKS.md, MiniLM section)
# SciFact slice: the first 100 judged test queries (by id), their relevant abstracts, and the corpus's first
# other abstracts up to 1,000 documents in all.
import gzip, json, os, sys
src, out = sys.argv[1], sys.argv[2]
judged = {}
for line in open(f"{src}/qrels/test.tsv").read().splitlines()[1:]:
    q, d, s = line.split("\t"); judged.setdefault(q, []).append(d)
judged = dict(sorted(judged.items())[:100])
relevant = {d for ds in judged.values() for d in ds}
docs = [json.loads(l) for l in gzip.open(f"{src}/corpus.jsonl.gz", "rt") if l.strip()]
keep = [d for d in docs if d["_id"] in relevant]
keep += [d for d in docs if d["_id"] not in relevant][: 1000 - len(keep)]
os.makedirs(f"{out}/qrels", exist_ok=True)
with open(f"{out}/corpus.jsonl", "w") as f: f.writelines(json.dumps(d) + "\n" for d in keep)
with open(f"{out}/queries.jsonl", "w") as f:
    f.writelines(l for l in open(f"{src}/queries.jsonl") if json.loads(l)["_id"] in judged)
with open(f"{out}/qrels/test.tsv", "w") as f:
    f.write("query-id\tcorpus-id\tscore\n"); f.writelines(f"{q}\t{d}\t1\n" for q, ds in judged.items() for d in ds)
print(len(keep), "documents,", len(judged), "queries")
