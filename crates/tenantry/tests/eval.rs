//! `tenantry eval` end to end, as a user runs it: the binary ingests a BEIR-format dataset into a scratch
//! tenant and prints nDCG@10 and recall@100, the last line JSON with `--json`.
//!
//! A tiny synthetic dataset always runs (the command cannot rot). A slice of SciFact runs when the dataset is
//! found (`TENANTRY_SCIFACT_DIR`, or `shared/data/scifact` beside the checkout): the first 40 judged test
//! queries, their relevant abstracts and 300 other abstracts as distractors. Floors on that slice (stated in
//! BENCHMARKS.md): nDCG@10 ≥ 0.60 and recall@100 ≥ 0.85 in `basic`, `advanced` and `agentic`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

/// `tenantry eval ARGS…`, its output whatever the exit status.
fn tenantry_eval<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .arg("eval")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("tenantry runs")
}

fn eval(dataset: &Path, mode: &str) -> Value {
    let out = tenantry_eval(
        [OsStr::new("--dataset"), dataset.as_os_str()].into_iter().chain(["--mode", mode, "--json"].map(OsStr::new)),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "eval failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().expect("output");
    let report: Value = serde_json::from_str(last).expect("last line is JSON");
    assert_eq!(report["mode"], mode);
    report
}

fn write_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = std::fs::File::create(path).expect("create");
    for l in lines {
        writeln!(f, "{l}").expect("write");
    }
}

/// A BEIR-format dataset in `dir`: documents `(id, title, text)`, queries `(id, text)` and test judgments
/// `(query, document)` of relevance 1.
fn write_dataset(dir: &Path, docs: &[(&str, &str, &str)], queries: &[(&str, &str)], relevant: &[(&str, &str)]) {
    write_lines(
        &dir.join("corpus.jsonl"),
        docs.iter().map(|(id, title, text)| json!({"_id": id, "title": title, "text": text}).to_string()),
    );
    write_lines(
        &dir.join("queries.jsonl"),
        queries.iter().map(|(id, text)| json!({"_id": id, "text": text}).to_string()),
    );
    std::fs::create_dir(dir.join("qrels")).expect("mkdir");
    let judgments = relevant.iter().map(|(q, d)| format!("{q}\t{d}\t1"));
    write_lines(&dir.join("qrels/test.tsv"), std::iter::once("query-id\tcorpus-id\tscore".to_owned()).chain(judgments));
}

#[test]
fn eval_scores_a_dataset_it_can_answer_perfectly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = [
        ("d1", "Penguins", "Emperor penguins breed during the Antarctic winter."),
        ("d2", "Volcanoes", "Basaltic lava flows from shield volcanoes in Hawaii."),
        ("d3", "Tea", "Green tea is steamed shortly after picking."),
    ];
    write_dataset(
        dir.path(),
        &docs,
        &[("q1", "emperor penguins breeding"), ("q2", "shield volcanoes lava")],
        &[("q1", "d1"), ("q2", "d2")],
    );

    for mode in ["basic", "advanced", "agentic"] {
        let report = eval(dir.path(), mode);
        assert_eq!((report["queries"].as_u64(), report["documents"].as_u64()), (Some(2), Some(3)));
        assert_eq!(report["ndcg_at_10"], 1.0, "{mode}: {report}");
        assert_eq!(report["recall_at_100"], 1.0, "{mode}: {report}");
    }

    // Several fusion settings over one ingestion: one JSON line each, in order, naming its weights.
    let run = |fusion: &[&str]| {
        let mut args = vec![OsStr::new("--dataset"), dir.path().as_os_str()];
        args.extend(["--mode", "advanced", "--json"].map(OsStr::new));
        args.extend(fusion.iter().flat_map(|f| [OsStr::new("--fusion"), OsStr::new(*f)]));
        tenantry_eval(args)
    };
    let out = run(&["1:0:0", "convex:0:0:1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reports: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let weights: Vec<(f64, f64, f64)> = reports
        .iter()
        .map(|r| {
            let w = &r["fusion"];
            (w["lexical"].as_f64().expect("w"), w["expanded"].as_f64().expect("w"), w["semantic"].as_f64().expect("w"))
        })
        .collect();
    assert_eq!(weights, [(1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]);
    let methods: Vec<&str> = reports.iter().filter_map(|r| r["fusion"]["method"].as_str()).collect();
    assert_eq!(methods, ["rrf", "convex"]);
    assert!(reports.iter().all(|r| r["recall_at_100"] == 1.0), "{reports:?}");
    let bad = run(&["1:0.3"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--fusion \"1:0.3\""),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

fn scifact() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TENANTRY_SCIFACT_DIR") {
        return Some(PathBuf::from(dir));
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/data/scifact"))
        .chain([PathBuf::from("/work/shared/data/scifact")])
        .find(|p| p.join("qrels/test.tsv").exists())
}

#[test]
fn eval_on_a_scifact_slice_beats_its_floors_in_every_mode() {
    let Some(source) = scifact() else {
        eprintln!("SciFact not found (set TENANTRY_SCIFACT_DIR); skipping the slice evaluation");
        return;
    };
    let mut judged: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let qrels = std::fs::read_to_string(source.join("qrels/test.tsv")).expect("qrels");
    for line in qrels.lines().skip(1) {
        let parts: Vec<&str> = line.split('\t').collect();
        judged.entry(parts[0].to_owned()).or_default().push(parts[1].to_owned());
    }
    let judged: BTreeMap<String, Vec<String>> = judged.into_iter().take(40).collect();
    let relevant: BTreeSet<&String> = judged.values().flatten().collect();

    let corpus = std::fs::File::open(source.join("corpus.jsonl.gz")).expect("corpus");
    let mut distractors = 0;
    let slice: Vec<String> = BufReader::new(flate2::read::GzDecoder::new(corpus))
        .lines()
        .map(|l| l.expect("line"))
        .filter(|l| {
            let doc: Value = serde_json::from_str(l).expect("json");
            let id = doc["_id"].as_str().expect("id").to_owned();
            if relevant.contains(&id) {
                return true;
            }
            distractors += 1;
            distractors <= 300
        })
        .collect();
    let queries: Vec<String> = std::fs::read_to_string(source.join("queries.jsonl"))
        .expect("queries")
        .lines()
        .filter(|l| {
            let q: Value = serde_json::from_str(l).expect("json");
            judged.contains_key(q["_id"].as_str().expect("id"))
        })
        .map(str::to_owned)
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    write_lines(&dir.path().join("corpus.jsonl"), slice);
    write_lines(&dir.path().join("queries.jsonl"), queries);
    std::fs::create_dir(dir.path().join("qrels")).expect("mkdir");
    let mut tsv = vec!["query-id\tcorpus-id\tscore".to_owned()];
    tsv.extend(judged.iter().flat_map(|(q, docs)| docs.iter().map(move |d| format!("{q}\t{d}\t1"))));
    write_lines(&dir.path().join("qrels/test.tsv"), tsv);

    for mode in ["basic", "advanced", "agentic"] {
        let report = eval(dir.path(), mode);
        eprintln!("SciFact slice, {mode}: {report}");
        assert_eq!(report["queries"], 40);
        assert!(report["ndcg_at_10"].as_f64().is_some_and(|n| n >= 0.60), "{mode}: {report}");
        assert!(report["recall_at_100"].as_f64().is_some_and(|r| r >= 0.85), "{mode}: {report}");
    }
}

#[test]
fn a_cut_corpus_scores_only_the_queries_it_can_answer_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = [("d1", "Penguins", "Emperor penguins breed in winter."), ("d2", "Tea", "Green tea is steamed.")];
    write_dataset(
        dir.path(),
        &docs,
        &[("q1", "penguins breeding"), ("q2", "steamed tea")],
        &[("q1", "d1"), ("q2", "d2")],
    );
    let run = |max_documents: &str| {
        let args = [OsStr::new("--dataset"), dir.path().as_os_str()];
        tenantry_eval(args.into_iter().chain(["--json", "--max-documents", max_documents].map(OsStr::new)))
    };

    let out = run("1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 of 2 judged queries have no relevant document among the 1 ingested"), "{stderr}");
    assert!(stderr.contains("only 1 queries"), "{stderr}");
    let report: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().expect("line")).expect("json");
    assert_eq!((report["queries"].as_u64(), report["ndcg_at_10"].as_f64()), (Some(1), Some(1.0)), "{report}");

    let out = run("0");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("too small to score"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_question_set_is_scored_by_the_rank_of_the_chunk_holding_each_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volcanoes = dir.path().join("volcanoes.md");
    std::fs::write(&volcanoes, "# Volcanoes\n\nBasaltic lava flows from shield volcanoes\nin Hawaii.\n")
        .expect("write");
    let tea = dir.path().join("tea.txt");
    std::fs::write(&tea, "Green tea is steamed shortly after picking, which keeps it green.").expect("write");
    let questions = dir.path().join("questions.jsonl");
    write_lines(
        &questions,
        [
            json!({"id": "lava", "question": "shield volcanoes lava Hawaii", "answer": "lava flows from shield volcanoes in Hawaii"}),
            json!({"id": "tea", "question": "why is green tea steamed", "answer": "steamed shortly after picking"}),
            json!({"id": "nowhere", "question": "penguins", "answer": "Emperor penguins breed in winter"}),
        ]
        .iter()
        .map(Value::to_string),
    );
    for mode in ["basic", "advanced", "agentic"] {
        let files = [("--questions", &questions), ("--document", &volcanoes), ("--document", &tea)];
        let args = files.into_iter().flat_map(|(flag, path)| [OsStr::new(flag), path.as_os_str()]);
        let out = tenantry_eval(args.chain(["--mode", mode, "--json"].map(OsStr::new)));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("question nowhere: no chunk holds its answer"), "{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: Value = serde_json::from_str(stdout.lines().last().expect("line")).expect("json");
        assert_eq!(report["mode"], mode);
        assert_eq!((report["questions"].as_u64(), report["documents"].as_u64()), (Some(3), Some(2)), "{report}");
        // Two answers ranked first (the span crosses a line break in the Markdown), one in no chunk.
        assert_eq!(report["hit_at_1"], 0.667, "{mode}: {report}");
        assert_eq!(report["hit_at_10"], 0.667, "{mode}: {report}");
        assert_eq!(report["mrr"], 0.667, "{mode}: {report}");
        assert_eq!(report["unreachable"], json!(["nowhere"]));
        assert_eq!(report["missed_at_3"], json!(["nowhere"]));
    }
}
