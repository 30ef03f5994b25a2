//! `deploy/grafana/herald.json` and `deploy/prometheus/herald-rules.yml` against the `/metrics`
//! of a live server: every metric family it exports is charted, and neither file names a
//! `herald_` series that does not exist.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use herald::config::PushSettings;
use herald::push::VapidKey;
use herald::push::endpoint::EndpointPolicy;
use herald::store::push::PushWhen;
use serde_json::Value;

use crate::helpers::TestApp;

const DASHBOARD: &str = include_str!("../../../deploy/grafana/herald.json");
const RULES: &str = include_str!("../../../deploy/prometheus/herald-rules.yml");

/// What a server's `/metrics` holds: its metric families (from `# TYPE` lines) and the names
/// of the series it writes (`herald_events_published_total`, `..._bucket`, ...).
struct Exported {
    /// `(family, type)`, e.g. `("herald_events_published", "counter")`.
    families: Vec<(String, String)>,
    series: BTreeSet<String>,
}

impl Exported {
    fn parse(text: &str) -> Self {
        let families = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(|rest| {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                (name.to_owned(), kind.to_owned())
            })
            .collect();
        let series = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| identifier(line).to_owned())
            .collect();
        Self { families, series }
    }

    /// The series a chart of `family` must read: a counter's `_total`, a gauge itself, a
    /// histogram's `_bucket` (for its quantiles).
    fn must_chart(&self) -> BTreeSet<String> {
        self.families
            .iter()
            .map(|(name, kind)| match kind.as_str() {
                "counter" => format!("{name}_total"),
                "gauge" => name.clone(),
                "histogram" => format!("{name}_bucket"),
                other => panic!("{name} is a {other}: say here what charting it means"),
            })
            .collect()
    }
}

/// The `/metrics` of a server with Web Push on, after one publish.
async fn exported() -> Exported {
    let app = TestApp::spawn_with(|settings| {
        settings.push = Some(PushSettings {
            key: Arc::new(VapidKey::generate().unwrap()),
            subject: "mailto:ops@example.com".into(),
            when: PushWhen::Offline,
            ttl: Duration::from_secs(3600),
            subscriptions_per_user: 10,
            endpoints: EndpointPolicy::new(Vec::new(), false),
        });
    })
    .await;
    app.publish("alice", "one").await;
    let text = app.metrics().await;
    app.stop().await;
    let exported = Exported::parse(&text);
    let has = |name: &str, kind: &str| {
        exported
            .families
            .iter()
            .any(|family| (family.0.as_str(), family.1.as_str()) == (name, kind))
    };
    assert!(
        has("herald_streams", "gauge") && has("herald_publish_latency_seconds", "histogram"),
        "{text}"
    );
    exported
}

/// The metric name a sample line or a selector starts with.
fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Every `herald_...` identifier in `expressions`, whole (`herald_streams` is not read out of
/// `herald_streams_refused_total`).
fn herald_names<'a>(expressions: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for expression in expressions {
        let mut rest = expression;
        while let Some(at) = rest.find("herald_") {
            let before = rest[..at].chars().next_back();
            let name = identifier(&rest[at..]);
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.insert(name.to_owned());
            }
            rest = &rest[at + name.len()..];
        }
    }
    names
}

/// Every panel of the dashboard, those inside rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, into: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            into.push(panel);
            walk(&panel["panels"], into);
        }
    }
    let mut all = Vec::new();
    walk(&dashboard["panels"], &mut all);
    all
}

/// The PromQL of every query target.
fn queries(dashboard: &Value) -> Vec<&str> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| panel["targets"].as_array().into_iter().flatten())
        .map(|target| target["expr"].as_str().expect("every target has an expr"))
        .collect()
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .find(|variable| variable["name"] == name)
        .unwrap_or_else(|| panic!("no ${name} variable"))
}

#[tokio::test]
async fn the_dashboard_charts_every_metric_herald_exports_and_names_no_other() {
    let exported = exported().await;
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("herald.json is JSON");
    let instance = variable(&dashboard, "instance");
    let instance_query = instance["query"].as_str().expect("a PromQL query");
    let queries = queries(&dashboard);
    let named = herald_names(queries.iter().copied().chain([instance_query]));

    let missing: Vec<_> = exported.must_chart().difference(&named).cloned().collect();
    assert!(
        missing.is_empty(),
        "herald exports, the dashboard lacks: {missing:?}"
    );
    let unknown: Vec<_> = named.difference(&exported.series).cloned().collect();
    assert!(
        unknown.is_empty(),
        "the dashboard names, herald does not export: {unknown:?}"
    );
    for (family, kind) in &exported.families {
        if kind == "histogram" {
            let bucket = format!("{family}_bucket");
            assert!(
                queries
                    .iter()
                    .any(|q| q.contains("histogram_quantile(") && q.contains(&bucket)),
                "{family}: no histogram_quantile over {bucket}"
            );
        }
    }
}

#[test]
fn the_dashboard_reads_the_chosen_prometheus_and_instances() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("herald.json is JSON");
    assert!(
        dashboard["schemaVersion"].as_u64() >= Some(39),
        "a schema of Grafana 11 or later"
    );
    let datasource = variable(&dashboard, "datasource");
    assert_eq!(
        (&datasource["type"], &datasource["query"]),
        (&Value::from("datasource"), &Value::from("prometheus"))
    );
    let instance = variable(&dashboard, "instance");
    assert_eq!(instance["type"], "query");
    assert_eq!(instance["datasource"]["uid"], "${datasource}");

    let charts: Vec<_> = panels(&dashboard)
        .into_iter()
        .filter(|panel| panel["type"] != "row")
        .collect();
    assert!(charts.len() >= 10, "{} charts", charts.len());
    for panel in charts {
        let title = &panel["title"];
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{title}: {expr}"
            );
            assert!(
                expr.contains(r#"{instance=~"$instance"}"#),
                "{title}: {expr} ignores $instance"
            );
        }
    }
}

#[tokio::test]
async fn the_alert_rules_name_only_exported_metrics_and_cover_what_operators_need() {
    let exported = exported().await;
    let rules: Value = serde_saphyr::from_str(RULES).expect("herald-rules.yml is YAML");
    let rules: Vec<&Value> = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules"))
        .collect();
    let named = herald_names(
        rules
            .iter()
            .map(|rule| rule["expr"].as_str().expect("expr")),
    );
    let unknown: Vec<_> = named.difference(&exported.series).cloned().collect();
    assert!(
        unknown.is_empty(),
        "the rules name, herald does not export: {unknown:?}"
    );

    let alerts: BTreeSet<&str> = rules
        .iter()
        .map(|rule| rule["alert"].as_str().expect("alerting rules only"))
        .collect();
    for needed in [
        "HeraldDown",
        "HeraldStoreUnavailable",
        "HeraldStreamsNearLimit",
        "HeraldSlowReaderCloses",
        "HeraldPublishLatencyHigh",
        "HeraldPushFailures",
    ] {
        assert!(alerts.contains(needed), "no {needed} in {alerts:?}");
    }
}
