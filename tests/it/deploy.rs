//! `deploy/` against the real things it is for (README.md, "Dashboards and alerts"; SECURITY.md,
//! "Deploying behind nginx"). The alert rules' behaviour is promtool's to test (`deploy/test`);
//! what needs herald itself is here.
//!
//! - `metrics`: the Grafana dashboard charts every metric a live server exports and names no
//!   other, and the alert rules name only exported metrics.
//! - `kubernetes`: the manifest's probes, grace period, environment, security context and
//!   selectors, read against herald's own flags and defaults.
//! - `nginx`: `deploy/nginx/herald.conf` in the real nginx, in front of the real binary.

mod kubernetes;
mod metrics;
mod nginx;
