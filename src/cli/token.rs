//! `herald token`: mint a subscriber token (HS256) with the server's secret.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use herald::domain::UserId;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The user the token is for (its `sub`)
    user_id: String,
    /// How long the token lives (e.g. 15m, 1h, 7d)
    #[arg(long, default_value = "1h")]
    ttl: humantime::Duration,
    /// The HS256 secret the server was started with
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
}

/// Prints a token whose `sub` is the user and whose `exp` is now plus the ttl.
pub fn mint(args: TokenArgs) -> anyhow::Result<()> {
    let user = UserId::parse(&args.user_id).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        !args.jwt_secret.is_empty(),
        "--jwt-secret must not be empty"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let claims = Claims {
        sub: user.as_str(),
        iat: now,
        exp: now.saturating_add(args.ttl.as_secs()),
    };
    let token = jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(args.jwt_secret.as_bytes()),
    )
    .context("cannot sign the token")?;
    println!("{token}");
    Ok(())
}
