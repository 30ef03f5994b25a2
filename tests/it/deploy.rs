//! `deploy/` against the real things it is for (README.md, "Dashboards and alerts"). The alert
//! rules' behaviour is promtool's to test (`deploy/test`); what needs herald itself is here.
//!
//! - `metrics`: the Grafana dashboard charts every metric a live server exports and names no
//!   other, and the alert rules name only exported metrics.

mod metrics;
