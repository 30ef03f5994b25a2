//! The `herald` command: `serve` (the default) and `check-config`, which read flags, the
//! environment and a configuration file; the HTTP clients `publish`, `broadcast`, `update`,
//! `delete`, `archive`, `subscribe` and `healthcheck`; `token` and `vapid-key`, which make
//! credentials. Errors end the process with one line on stderr and a non-zero status.

#![forbid(unsafe_code)]

mod cli;

use std::io::{IsTerminal, Write};

use std::ffi::OsString;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use herald::config::ServeArgs;
use herald::config::file::{self, Provenance};
use tracing_subscriber::EnvFilter;

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
    /// Print the settings `serve` would run with (secrets redacted), or what is wrong with them
    ///
    /// Reads flags, the environment and --config / HERALD_CONFIG exactly as `serve` does, and
    /// checks what `serve` checks before it listens (key and certificate files included).
    CheckConfig(ServeArgs),
    /// Exit 0 when the server's /readyz answers 200 (for container health checks)
    Healthcheck(cli::healthcheck::HealthcheckArgs),
    /// Send a notification to one user (or several with --to) and print the server's answer
    ///
    /// Prints the stored notification as one line of JSON; with --to, the id each user's
    /// notification got: {"notifications":[{"userId":..,"id":..}, ...]}.
    Publish(cli::publish::PublishArgs),
    /// Send an announcement to every open stream
    Broadcast(cli::publish::BroadcastArgs),
    /// Change a sent notification and print it as it now is (needs a publish key)
    ///
    /// Only the fields given change. --clear-link, --clear-data and --clear-category remove a
    /// field. The user's open streams get an `updated` event with the printed JSON.
    Update(cli::lifecycle::UpdateArgs),
    /// Delete a notification for good (a publish key or the user's own token)
    ///
    /// Prints {"id":ID,"deleted":true}. The notification leaves the user's history and their
    /// open streams get a `deleted` event. When both --key and --token are given, the key is
    /// sent.
    Delete(cli::lifecycle::DeleteArgs),
    /// Archive a notification, or with --undo unarchive it (a publish key or the user's own token)
    ///
    /// Prints the server's answer, {"id":ID,"archived":true|false}. History leaves archived
    /// notifications out unless asked for them. When both --key and --token are given, the key
    /// is sent.
    Archive(cli::lifecycle::ArchiveArgs),
    /// Print a user's events as JSON lines, reconnecting with Last-Event-ID
    Subscribe(cli::subscribe::SubscribeArgs),
    /// Mint a subscriber token (HS256) for a user with the server's --jwt-secret
    Token(cli::token::TokenArgs),
    /// Make a VAPID key for Web Push (--vapid-key) and print its public key
    ///
    /// Writes a new P-256 private key (PKCS#8 PEM, mode 0600) to --out, which must not exist,
    /// and prints the public key as GET /api/push/public-key serves it.
    VapidKey(cli::vapid_key::VapidKeyArgs),
}

fn main() -> std::process::ExitCode {
    let (cli, provenance, matches) = match parse(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(Parsed::Clap(error)) if !error.use_stderr() => error.exit(),
        Err(Parsed::Clap(error)) => {
            eprintln!("herald: {}", one_line(&error));
            return std::process::ExitCode::from(2);
        }
        Err(Parsed::File(message)) => {
            eprintln!("herald: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(anyhow::Error::from(error).context("cannot start tokio")),
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            None => serve(cli.serve, &provenance).await,
            Some(Command::Serve(args)) => serve(args, &provenance).await,
            Some(Command::CheckConfig(args)) => {
                cli::check_config::check(args, &provenance, serve_matches(&matches))
            }
            Some(Command::Healthcheck(args)) => cli::healthcheck::check(args).await,
            Some(Command::Publish(args)) => cli::publish::publish(args).await,
            Some(Command::Broadcast(args)) => cli::publish::broadcast(args).await,
            Some(Command::Update(args)) => cli::lifecycle::update(args).await,
            Some(Command::Delete(args)) => cli::lifecycle::delete(args).await,
            Some(Command::Archive(args)) => cli::lifecycle::archive(args).await,
            Some(Command::Subscribe(args)) => cli::subscribe::subscribe(args).await,
            Some(Command::Token(args)) => cli::token::mint(args),
            Some(Command::VapidKey(args)) => cli::vapid_key::make(args),
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

/// Why the command line could not be read.
enum Parsed {
    Clap(clap::Error),
    /// The configuration file, or a value it gave, is at fault: the message names the key.
    File(String),
}

/// Parses `argv`, with the configuration file's settings (README.md#configuration-file) added
/// as flags where neither a flag nor the environment gave them.
fn parse(argv: Vec<OsString>) -> Result<(Cli, Provenance, clap::ArgMatches), Parsed> {
    let command = Cli::command();
    let first = command
        .clone()
        .try_get_matches_from(&argv)
        .map_err(Parsed::Clap)?;
    let (argv, provenance) = match first.subcommand() {
        Some((name @ ("serve" | "check-config"), sub)) => {
            let serve = command
                .find_subcommand(name)
                .expect("a subcommand clap matched");
            file::layer(serve, sub, argv)
        }
        Some(_) => Ok((argv, Provenance::default())),
        None => file::layer(&command, &first, argv),
    }
    .map_err(|error| Parsed::File(error.to_string()))?;
    let matches = command.try_get_matches_from(argv).map_err(|error| {
        // A value the file gave is named as the file's key.
        match invalid_flag(&error) {
            Some(flag) if provenance.from_file.contains(&flag) => {
                Parsed::File(format!("{}: {}", provenance.name(&flag), one_line(&error)))
            }
            _ => Parsed::Clap(error),
        }
    })?;
    let cli = Cli::from_arg_matches(&matches).map_err(Parsed::Clap)?;
    Ok((cli, provenance, matches))
}

/// The arguments of `serve` (or `check-config`) within the whole command line's.
fn serve_matches(matches: &clap::ArgMatches) -> &clap::ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => sub,
        None => matches,
    }
}

/// The flag (without `--`) whose value clap refused, if that is what `error` is about.
fn invalid_flag(error: &clap::Error) -> Option<String> {
    let clap::error::ContextValue::String(arg) = error.get(clap::error::ContextKind::InvalidArg)?
    else {
        return None;
    };
    let flag = arg.strip_prefix("--")?;
    Some(flag.split([' ', '=']).next().unwrap_or(flag).to_owned())
}

/// clap's message on one line, like every other failure (clap would add a blank line and a
/// hint).
fn one_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more"))
        .filter(|line| !line.is_empty())
        .collect();
    message.join(" ").trim_start_matches("error: ").to_owned()
}

async fn serve(args: ServeArgs, provenance: &Provenance) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("HERALD_LOG")
                .or_else(|_| EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let settings = args
        .into_settings()
        .map_err(|error| anyhow::anyhow!("{}: {}", provenance.name(error.flag), error.problem))?;
    let open = open_halves(&settings);
    if let Some(open) = &open {
        if !settings.listen.ip().is_loopback() && !settings.allow_anonymous {
            anyhow::bail!(
                "refusing to serve on {} with {open}: set the missing auth flags, or pass --allow-anonymous to serve anyway",
                settings.listen
            );
        }
    }
    // Watch the signals before anything else, so a stop at any moment from here drains.
    let stop = stop_signal().context("cannot watch SIGTERM and SIGINT")?;
    let listener =
        listen(settings.listen).with_context(|| format!("cannot listen on {}", settings.listen))?;
    let address = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    // Everything that can fail at start (certificate, store) does so before the address is
    // announced: a script that waits for this line may use the server at once.
    let node = herald::server::Node::start(settings).await?;
    if let Some(open) = open {
        tracing::warn!("auth: {open}");
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {scheme}://{address}")?;
    stdout.flush()?;
    node.serve(listener, stop).await?;
    Ok(())
}

/// Binds with a deep accept queue: a reconnect storm (thousands of clients after a restart)
/// must queue, not be refused and retried seconds later. The kernel caps it at somaxconn.
fn listen(address: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    const BACKLOG: u32 = 4096;
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(BACKLOG)
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

/// Watches SIGTERM and SIGINT from now on; the future completes on the first of them.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
