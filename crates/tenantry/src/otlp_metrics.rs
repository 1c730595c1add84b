//! Metrics over OTLP: when a collector is configured, every `interval` the metrics a Prometheus scrape
//! would read (`GET /metrics`, the same registry and the same store gauges) are pushed to
//! `<endpoint>/v1/metrics` as an OTLP/HTTP protobuf `ExportMetricsServiceRequest`. Counters become
//! cumulative monotonic sums, gauges gauges, histograms explicit-bucket histograms; labels become
//! attributes, bounded as they are for Prometheus.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tenantry_web::MetricsSource;

/// Pushes the metrics every `interval` until the process ends; a failed push is logged once per outage.
pub fn export(endpoint: &str, service_name: String, interval: Duration, source: MetricsSource) {
    let url = format!("{}/v1/metrics", endpoint.trim_end_matches('/'));
    tracing::info!(url, every_ms = interval.as_millis() as u64, "exporting metrics over OTLP");
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        let started = unix_nanos(SystemTime::now());
        let mut failing = false;
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            let pushed = match source.openmetrics().await {
                Ok(text) => push(&client, &url, to_otlp(&text, &service_name, started)).await,
                Err(e) => Err(format!("the metrics could not be encoded: {e}")),
            };
            match pushed {
                Err(e) if !failing => {
                    tracing::warn!(url, error = %e, "metrics were not exported over OTLP");
                    failing = true;
                }
                Ok(()) if failing => {
                    tracing::info!(url, "exporting metrics over OTLP again");
                    failing = false;
                }
                _ => {}
            }
        }
    });
}

async fn push(client: &reqwest::Client, url: &str, request: ExportMetricsServiceRequest) -> Result<(), String> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match response.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!("the collector answered {s}")),
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One metric family of the exposition: its name (without `_total`), kind and help.
struct Family {
    name: String,
    kind: String,
    help: String,
    unit: String,
    samples: Vec<Sample>,
}

/// One sample line: the name as written (`…_total`, `…_bucket`), its labels and value.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The OpenMetrics text (as prometheus-client writes it) as one OTLP export request.
pub fn to_otlp(openmetrics: &str, service_name: &str, start_nanos: u64) -> ExportMetricsServiceRequest {
    let now = unix_nanos(SystemTime::now());
    let metrics = families(openmetrics).into_iter().filter_map(|f| metric(f, start_nanos, now)).collect();
    let resource = Resource { attributes: vec![attribute("service.name", service_name)], ..Default::default() };
    let scope = InstrumentationScope { name: "tenantry".into(), ..Default::default() };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics { scope: Some(scope), metrics, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// The families of the exposition in order. A family's `# HELP`, `# TYPE` and `# UNIT` lines come before its
/// samples, in any order among themselves (prometheus-client writes HELP first).
fn families(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        let metadata = ["# HELP ", "# TYPE ", "# UNIT "].into_iter().find_map(|p| Some((p, line.strip_prefix(p)?)));
        if let Some((prefix, rest)) = metadata {
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            let family = family_named(&mut families, name);
            match prefix {
                "# HELP " => family.help = value.into(),
                "# TYPE " => family.kind = value.into(),
                _ => family.unit = value.into(),
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            if let (Some(family), Some(sample)) = (families.last_mut(), sample(line)) {
                family.samples.push(sample);
            }
        }
    }
    families
}

/// The last family when it is `name`'s, else a new one.
fn family_named<'a>(families: &'a mut Vec<Family>, name: &str) -> &'a mut Family {
    if families.last().is_none_or(|f| f.name != name) {
        families.push(Family {
            name: name.into(),
            kind: String::new(),
            help: String::new(),
            unit: String::new(),
            samples: Vec::new(),
        });
    }
    let last = families.len() - 1;
    &mut families[last]
}

/// `name{k="v",…} value [# exemplar]`; `None` for a line of another shape.
fn sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(at) => line.split_at(at),
        None => return None,
    };
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => labels(inner)?,
        None => (Vec::new(), rest),
    };
    let value = rest.trim_start().split(' ').next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name: name.into(), labels, value })
}

/// The labels after `{`, up to the closing `}`, with `\"`, `\\` and `\n` unescaped; and what follows.
fn labels(text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after[end + 1..];
    }
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| attribute(k, v)).collect()
}

fn number(labels: &[(String, String)], value: f64, start: u64, now: u64) -> NumberDataPoint {
    let value = if value.fract() == 0.0 && value.abs() < 9.0e15 {
        number_data_point::Value::AsInt(value as i64)
    } else {
        number_data_point::Value::AsDouble(value)
    };
    NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(value),
        ..Default::default()
    }
}

fn metric(family: Family, start: u64, now: u64) -> Option<Metric> {
    let cumulative = AggregationTemporality::Cumulative as i32;
    let data = match family.kind.as_str() {
        "counter" => metric::Data::Sum(Sum {
            data_points: family.samples.iter().map(|s| number(&s.labels, s.value, start, now)).collect(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        "gauge" => metric::Data::Gauge(Gauge {
            data_points: family.samples.iter().map(|s| number(&s.labels, s.value, 0, now)).collect(),
        }),
        "histogram" => metric::Data::Histogram(Histogram {
            data_points: histogram_points(&family, start, now),
            aggregation_temporality: cumulative,
        }),
        _ => return None,
    };
    Some(Metric {
        name: family.name,
        description: family.help,
        unit: family.unit,
        data: Some(data),
        ..Default::default()
    })
}

/// A histogram's series (its labels but `le`), each from its cumulative `_bucket` counts, `_sum` and `_count`.
fn histogram_points(family: &Family, start: u64, now: u64) -> Vec<HistogramDataPoint> {
    #[derive(Default)]
    struct Series {
        buckets: Vec<(f64, f64)>,
        sum: f64,
        count: f64,
    }
    let mut series: BTreeMap<Vec<(String, String)>, Series> = BTreeMap::new();
    for s in &family.samples {
        let labels: Vec<(String, String)> = s.labels.iter().filter(|(k, _)| k != "le").cloned().collect();
        let entry = series.entry(labels).or_default();
        match s.name.strip_prefix(family.name.as_str()) {
            Some("_bucket") => {
                let le = s.labels.iter().find(|(k, _)| k == "le").map(|(_, v)| v.as_str());
                let bound = match le {
                    Some("+Inf") => f64::INFINITY,
                    Some(v) => v.parse().unwrap_or(f64::INFINITY),
                    None => continue,
                };
                entry.buckets.push((bound, s.value));
            }
            Some("_sum") => entry.sum = s.value,
            Some("_count") => entry.count = s.value,
            _ => {}
        }
    }
    series
        .into_iter()
        .map(|(labels, mut s)| {
            s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let bounds: Vec<f64> = s.buckets.iter().map(|b| b.0).filter(|b| b.is_finite()).collect();
            let mut below = 0.0;
            let mut counts: Vec<u64> = Vec::with_capacity(bounds.len() + 1);
            for (bound, cumulative) in &s.buckets {
                if bound.is_finite() {
                    counts.push((cumulative - below).max(0.0) as u64);
                    below = *cumulative;
                }
            }
            counts.push((s.count - below).max(0.0) as u64);
            HistogramDataPoint {
                attributes: attributes(&labels),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: s.count as u64,
                sum: Some(s.sum),
                bucket_counts: counts,
                explicit_bounds: bounds,
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# HELP t_requests Requests answered.\n# TYPE t_requests counter\n\
        t_requests_total{method=\"GET\",route=\"/v1/a \\\"b\\\"\",status=\"200\"} 3\n\
        # HELP t_seconds Time.\n# TYPE t_seconds histogram\n# UNIT t_seconds seconds\n\
        t_seconds_sum{route=\"/a\"} 0.75\nt_seconds_count{route=\"/a\"} 4\n\
        t_seconds_bucket{le=\"0.1\",route=\"/a\"} 1 # {tenant_id=\"ten_1\"} 0.05\n\
        t_seconds_bucket{le=\"0.5\",route=\"/a\"} 3\nt_seconds_bucket{le=\"+Inf\",route=\"/a\"} 4\n\
        # HELP t_tenants Tenants.\n# TYPE t_tenants gauge\nt_tenants{state=\"active\"} 7\n# TYPE t_lag gauge\nt_lag 1.5\n# EOF\n";

    fn metric_named<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> &'a metric::Data {
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        metrics.iter().find(|m| m.name == name).and_then(|m| m.data.as_ref()).expect(name)
    }

    #[test]
    fn counters_gauges_and_histograms_become_their_otlp_kinds() {
        let request = to_otlp(EXPOSITION, "tenantry", 1);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let described: Vec<(&str, &str, &str)> =
            metrics.iter().map(|m| (m.name.as_str(), m.description.as_str(), m.unit.as_str())).collect();
        assert_eq!(
            described,
            vec![
                ("t_requests", "Requests answered.", ""),
                ("t_seconds", "Time.", "seconds"),
                ("t_tenants", "Tenants.", ""),
                ("t_lag", "", "")
            ],
            "each family keeps its own help and unit"
        );
        let metric::Data::Sum(sum) = metric_named(&request, "t_requests") else { panic!("a sum") };
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points[0].value, Some(number_data_point::Value::AsInt(3)));
        let route = &sum.data_points[0].attributes[1];
        assert_eq!(route.key, "route");
        let Some(any_value::Value::StringValue(route)) = route.value.as_ref().and_then(|v| v.value.as_ref()) else {
            panic!("a string")
        };
        assert_eq!(route, "/v1/a \"b\"");

        let metric::Data::Histogram(histogram) = metric_named(&request, "t_seconds") else { panic!("a histogram") };
        let point = &histogram.data_points[0];
        assert_eq!((point.count, point.sum), (4, Some(0.75)));
        assert_eq!(point.explicit_bounds, vec![0.1, 0.5]);
        assert_eq!(point.bucket_counts, vec![1, 2, 1], "per bucket, not cumulative");
        assert_eq!(point.attributes.len(), 1, "`le` is not an attribute");

        let metric::Data::Gauge(gauge) = metric_named(&request, "t_tenants") else { panic!("a gauge") };
        assert_eq!(gauge.data_points[0].value, Some(number_data_point::Value::AsInt(7)));
        let metric::Data::Gauge(lag) = metric_named(&request, "t_lag") else { panic!("a gauge") };
        assert_eq!(lag.data_points[0].value, Some(number_data_point::Value::AsDouble(1.5)));
        assert!(lag.data_points[0].attributes.is_empty());
    }
}
