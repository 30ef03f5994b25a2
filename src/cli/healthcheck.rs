//! `herald healthcheck`: exits 0 when the server's `/readyz` answers `200`, for container
//! health checks where there is no curl (README.md#deploying).

use std::time::Duration;

use anyhow::Context;

use super::client::ServerArgs;

/// The whole check, connecting included: a health check that hangs is a failed one.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug, Clone)]
pub struct HealthcheckArgs {
    #[command(flatten)]
    pub server: ServerArgs,
}

pub async fn check(args: HealthcheckArgs) -> anyhow::Result<()> {
    let url = args
        .server
        .url
        .join("readyz")
        .context("cannot make the /readyz URL")?;
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .context("could not set up the HTTP client")?;
    let response = client
        .get(url.clone())
        .send()
        .await
        .map_err(|error| anyhow::anyhow!(super::client::with_root_cause(&url, &error)))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("{url} answered {status}: {}", body.trim());
    }
    Ok(())
}
