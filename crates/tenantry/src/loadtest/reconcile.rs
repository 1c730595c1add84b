//! The load test's end: what each tenant saw (its successful requests, uploads and deletions, citations,
//! upstream calls) against what the service recorded (usage, the operator's ledger series, ClickHouse's
//! totals when it is configured, documents, quotas, plan). Each kind of difference is counted; a run upholds every guarantee when all are zero.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

/// What the load test saw happen to one tenant.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// Questions answered 200 (`/v1/query` and chat completions).
    pub asked: u64,
    pub uploaded: u64,
    pub deleted: u64,
    /// Requests that got no answer: their outcome is unknown.
    pub unanswered: u64,
    /// Answers naming a model other than the tenant's.
    pub wrong_model_answers: u64,
    /// Documents cited in the tenant's answers that it never uploaded.
    pub foreign_citations: u64,
    pub model: String,
    /// Whether the tenant's model is hosted (each question is one upstream call) or offline (none).
    pub hosted: bool,
    /// The plan its last successful plan change moved it to (or its first).
    pub plan: String,
    /// Requests the fake upstream attributed to the tenant.
    pub upstream_calls: u64,
}

/// What the service recorded for one tenant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerView {
    /// `GET /v1/usage`: questions, in all and per model.
    pub usage_queries: u64,
    pub usage_by_model: HashMap<String, u64>,
    /// The operator's daily series over the same range (`/admin/tenants/{id}/usage/timeseries`), per model.
    pub ledger_by_model: HashMap<String, u64>,
    /// `GET /v1/documents`.
    pub documents: u64,
    /// `GET /v1/quotas`: (used, limit) of questions and of documents.
    pub queries_quota: (u64, u64),
    pub documents_quota: (u64, u64),
    /// `GET /v1/tenant`.
    pub plan: String,
    /// Questions ClickHouse holds for the tenant (`/admin/analytics/reconcile`); `None` without ClickHouse.
    pub analytics_queries: Option<u64>,
}

impl ServerView {
    /// The service's answers; `analytics` is `/admin/analytics/reconcile`'s, `None` without ClickHouse.
    pub fn read(
        usage: &Value,
        series: &Value,
        documents: &Value,
        quotas: &Value,
        tenant: &Value,
        analytics: Option<&Value>,
    ) -> Self {
        let number = |v: &Value| v.as_u64().unwrap_or(0);
        let usage_by_model = usage["by_model"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(model, m)| (model.clone(), number(&m["queries"])))
            .collect();
        let mut ledger_by_model = HashMap::new();
        for point in series["points"].as_array().into_iter().flatten().filter(|p| p["meter"] == "queries") {
            let model = point["model"].as_str().unwrap_or_default().to_owned();
            *ledger_by_model.entry(model).or_default() += number(&point["quantity"]);
        }
        let quota = |key: &str| (number(&quotas["used"][key]), number(&quotas["limits"][key]));
        Self {
            usage_queries: number(&usage["totals"]["queries"]),
            usage_by_model,
            ledger_by_model,
            documents: documents["documents"].as_array().map_or(0, |d| d.len() as u64),
            queries_quota: quota("queries"),
            documents_quota: quota("documents"),
            plan: tenant["plan"].as_str().unwrap_or_default().to_owned(),
            analytics_queries: analytics.map(|a| {
                let meters = a["meters"].as_array().into_iter().flatten();
                meters.filter(|m| m["meter"] == "queries").map(|m| number(&m["analytics"])).sum()
            }),
        }
    }
}

/// Differences found, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mismatches(BTreeMap<&'static str, u64>);

/// Every kind a report lists, zero or not.
const KINDS: [&str; 15] = [
    "unanswered",
    "usage_queries",
    "ledger_queries",
    "analytics_queries",
    "wrong_model_metered",
    "wrong_model_answered",
    "documents",
    "quota_overshoot",
    "cross_tenant_citations",
    "upstream_calls",
    "upstream_wrong_model",
    "upstream_unattributed",
    "upstream_foreign_passages",
    "plan",
    "server_errors",
];

impl Mismatches {
    pub fn is_empty(&self) -> bool {
        self.0.values().all(|&n| n == 0)
    }

    fn count(&mut self, kind: &'static str, n: u64) {
        if n > 0 {
            *self.0.entry(kind).or_default() += n;
        }
    }

    pub fn add(&mut self, other: &Mismatches) {
        for (kind, n) in &other.0 {
            self.count(kind, *n);
        }
    }

    /// What the fake upstream found wrong in the requests it received.
    pub fn upstream(&mut self, wrong_model: u64, unattributed: u64, foreign_passages: u64) {
        self.count("upstream_wrong_model", wrong_model);
        self.count("upstream_unattributed", unattributed);
        self.count("upstream_foreign_passages", foreign_passages);
    }

    pub fn into_map(self) -> BTreeMap<&'static str, u64> {
        let mut all: BTreeMap<&'static str, u64> = KINDS.iter().map(|k| (*k, 0)).collect();
        all.extend(self.0);
        all
    }
}

/// One tenant's differences. Counts compare exactly: every successful question is metered once, under the
/// tenant's own model, in the usage report and in the ledger series, and reached the upstream once when the
/// model is hosted; the documents listed are the first one, plus uploads, less deletions.
pub fn tenant(seen: &Observed, recorded: &ServerView) -> Mismatches {
    let mut found = Mismatches::default();
    let differs = |a: u64, b: u64| u64::from(a != b);
    found.count("unanswered", seen.unanswered);
    found.count("usage_queries", differs(recorded.usage_queries, seen.asked));
    let ledger_total: u64 = recorded.ledger_by_model.values().sum();
    found.count("ledger_queries", differs(ledger_total, seen.asked));
    if let Some(analytics) = recorded.analytics_queries {
        found.count("analytics_queries", differs(analytics, seen.asked));
    }
    let metered_elsewhere = |by_model: &HashMap<String, u64>| {
        by_model.iter().filter(|(model, &n)| **model != seen.model && n > 0).count() as u64
    };
    found.count(
        "wrong_model_metered",
        metered_elsewhere(&recorded.usage_by_model) + metered_elsewhere(&recorded.ledger_by_model),
    );
    found.count("wrong_model_answered", seen.wrong_model_answers);
    let documents = (1 + seen.uploaded).saturating_sub(seen.deleted);
    found.count("documents", differs(recorded.documents, documents));
    let over = |(used, limit): (u64, u64)| u64::from(used > limit);
    found.count("quota_overshoot", over(recorded.queries_quota) + over(recorded.documents_quota));
    found.count("cross_tenant_citations", seen.foreign_citations);
    let expected_calls = if seen.hosted { seen.asked } else { 0 };
    found.count("upstream_calls", differs(seen.upstream_calls, expected_calls));
    found.count("plan", u64::from(recorded.plan != seen.plan));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreeing() -> (Observed, ServerView) {
        let seen = Observed {
            asked: 7,
            uploaded: 3,
            deleted: 1,
            model: "lt-alpha".into(),
            hosted: true,
            plan: "lt-plus".into(),
            upstream_calls: 7,
            ..Observed::default()
        };
        let recorded = ServerView {
            usage_queries: 7,
            usage_by_model: HashMap::from([("lt-alpha".into(), 7)]),
            ledger_by_model: HashMap::from([("lt-alpha".into(), 7)]),
            documents: 3,
            queries_quota: (7, 25),
            documents_quota: (3, 4),
            plan: "lt-plus".into(),
            analytics_queries: Some(7),
        };
        (seen, recorded)
    }

    #[test]
    fn a_tenant_whose_records_agree_has_no_mismatch() {
        let (seen, recorded) = agreeing();
        assert!(tenant(&seen, &recorded).is_empty(), "{:?}", tenant(&seen, &recorded));
    }

    /// Makes one record disagree with the other.
    type Breaker = Box<dyn Fn(&mut Observed, &mut ServerView)>;

    #[test]
    fn each_broken_guarantee_is_counted_under_its_kind() {
        let (seen, recorded) = agreeing();
        let cases: Vec<(&str, Breaker)> = vec![
            ("usage_queries", Box::new(|_, r| r.usage_queries = 8)),
            (
                "ledger_queries",
                Box::new(|_, r| {
                    r.ledger_by_model.insert("lt-alpha".into(), 6);
                }),
            ),
            ("wrong_model_metered", Box::new(|_, r| r.usage_by_model = HashMap::from([("lt-beta".into(), 7)]))),
            ("documents", Box::new(|_, r| r.documents = 4)),
            ("quota_overshoot", Box::new(|_, r| r.queries_quota = (26, 25))),
            ("cross_tenant_citations", Box::new(|s, _| s.foreign_citations = 1)),
            ("upstream_calls", Box::new(|s, _| s.upstream_calls = 6)),
            ("plan", Box::new(|_, r| r.plan = "lt-loose".into())),
            ("analytics_queries", Box::new(|_, r| r.analytics_queries = Some(6))),
            ("unanswered", Box::new(|s, _| s.unanswered = 2)),
        ];
        for (kind, break_it) in cases {
            let (mut s, mut r) = (seen.clone(), recorded.clone());
            break_it(&mut s, &mut r);
            let found = tenant(&s, &r).into_map();
            assert!(found[kind] > 0, "{kind}: {found:?}");
            assert_eq!(found.values().filter(|&&n| n > 0).count(), 1, "{kind} alone: {found:?}");
        }
        // Without ClickHouse there is nothing to compare it with.
        assert!(tenant(&seen, &ServerView { analytics_queries: None, ..recorded.clone() }).is_empty());
        // A local model never calls the upstream.
        let local = Observed { hosted: false, upstream_calls: 0, ..seen };
        assert!(tenant(&local, &recorded).is_empty());
        assert_eq!(tenant(&Observed { upstream_calls: 1, ..local }, &recorded).into_map()["upstream_calls"], 1);
    }

    #[test]
    fn the_service_answers_are_read_as_the_api_shapes_them() {
        let usage = serde_json::json!({"totals": {"queries": 5}, "by_model": {"lt-beta": {"queries": 5}}});
        let series = serde_json::json!({"points": [
            {"meter": "queries", "model": "lt-beta", "quantity": 3},
            {"meter": "queries", "model": "lt-beta", "quantity": 2},
            {"meter": "prompt_tokens", "model": "lt-beta", "quantity": 900},
        ]});
        let documents = serde_json::json!({"documents": [{}, {}]});
        let quotas =
            serde_json::json!({"used": {"queries": 5, "documents": 2}, "limits": {"queries": 25, "documents": 4}});
        let analytics = serde_json::json!({"meters": [
            {"meter": "documents", "ledger": 2, "analytics": 2},
            {"meter": "queries", "ledger": 5, "analytics": 4},
        ]});
        let tenant = serde_json::json!({"plan": "lt-tight"});
        let view = ServerView::read(&usage, &series, &documents, &quotas, &tenant, Some(&analytics));
        assert_eq!(view.usage_queries, 5);
        assert_eq!(view.ledger_by_model, HashMap::from([("lt-beta".into(), 5)]));
        assert_eq!((view.documents, view.queries_quota, view.documents_quota), (2, (5, 25), (2, 4)));
        assert_eq!(view.plan, "lt-tight");
        assert_eq!(view.analytics_queries, Some(4));
    }
}
