//! The `herald` command: `serve` (the default) and the HTTP clients `publish`, `broadcast` and
//! `subscribe`. Errors end the process with one line on stderr and a non-zero status.

mod cli;

use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::{Parser, Subcommand};
use herald::config::ServeArgs;
use tracing_subscriber::EnvFilter;

use cli::client;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Real-time notifications over Server-Sent Events",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command, herald serves with these flags.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the notification server
    Serve(ServeArgs),
    /// Send a notification to one user and print it as stored
    Publish(client::PublishArgs),
    /// Send an announcement to every open stream
    Broadcast(client::BroadcastArgs),
    /// Print a user's events as JSON lines, reconnecting with Last-Event-ID
    Subscribe(client::SubscribeArgs),
    /// Mint a subscriber token (HS256) for a user with the server's --jwt-secret
    Token(cli::token::TokenArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(anyhow::Error::from(error).context("cannot start tokio")),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            None => serve(cli.serve).await,
            Some(Command::Serve(args)) => serve(args).await,
            Some(Command::Publish(args)) => client::publish(args).await,
            Some(Command::Broadcast(args)) => client::broadcast(args).await,
            Some(Command::Subscribe(args)) => client::subscribe(args).await,
            Some(Command::Token(args)) => cli::token::mint(args),
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => fail(error),
    }
}

fn fail(error: anyhow::Error) -> std::process::ExitCode {
    eprintln!("herald: {error:#}");
    std::process::ExitCode::FAILURE
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("HERALD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let settings = args.into_settings()?;
    if let Some(open) = open_halves(&settings) {
        if !settings.listen.ip().is_loopback() && !settings.allow_anonymous {
            anyhow::bail!(
                "refusing to serve on {} with {open}: set the missing auth flags, or pass --allow-anonymous to serve anyway",
                settings.listen
            );
        }
        tracing::warn!("auth: {open}");
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let address = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{address}")?;
    stdout.flush()?;
    herald::run(listener, settings, stop_signal()).await?;
    Ok(())
}

/// One line saying which halves of auth are open, if any.
fn open_halves(settings: &herald::Settings) -> Option<String> {
    let auth = &settings.auth;
    let subscribing =
        "subscribing (streams, own history) is open to anyone: no --jwt-secret or --jwt-public-key";
    let publishing =
        "publishing (publish, broadcast, any history) is open to anyone: no --publish-key";
    match (auth.tokens.is_none(), auth.publish_keys.is_none()) {
        (true, true) => Some(format!("{subscribing}; {publishing}")),
        (true, false) => Some(subscribing.to_owned()),
        (false, true) => Some(publishing.to_owned()),
        (false, false) => None,
    }
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::error!(%error, "cannot watch SIGTERM; only SIGINT stops herald");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
