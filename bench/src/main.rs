//! `herald-bench`: a load generator for any SSE notification server, given URL templates, so
//! the same tool measures herald and the reference design. It shares no code with herald.
//!
//! # Layout
//! - [`setup`]: the flags, checked once ([`parse`] keeps every target on loopback, 127.0.0.0/8).
//! - [`scenarios`]: hold, fanout, targeted, many-recipients, replay and floor; each opens
//!   streams, publishes, waits with a deadline and reports.
//! - [`push`]: the push scenario (users with no stream, each subscribed to [`push_service`], a
//!   push service inside the bench) and the pushes targeted's `--push-subscribe` counts.
//! - [`fleet`], [`conn`], [`sse`]: the streams, on a hand-written HTTP/1.1 + SSE client so that
//!   tens of thousands of idle streams stay cheap; [`tls`]: hold-tls, idle streams over TLS
//!   (HTTP/1.1 or HTTP/2) through reqwest.
//! - [`publish`]: publishes (to one user, many users or everyone) through reqwest with
//!   keep-alive.
//! - [`tally`] checks what arrived; [`report`] prints the table and the JSON line.
//! - [`floor`]: the ideal server of the `floor` scenario, which this binary starts as its own
//!   child (the hidden `floor-server` subcommand) to show what any server could do here;
//!   [`durable_floor`]: the same for the targeted case and a server that keeps every publish
//!   on disk first (`targeted-floor`, the hidden `durable-floor-server`).
//! - [`model`]: the `model` subcommand, docs/scaling.md's capacity model: measured unit costs
//!   times a deployment's size, no load at all.

#![forbid(unsafe_code)]

mod conn;
mod durable_floor;
mod fleet;
mod floor;
mod model;
mod parse;
mod publish;
mod push;
mod push_service;
mod report;
mod scenarios;
mod setup;
mod sse;
mod tally;
mod tls;

use clap::{Parser, Subcommand};

use setup::{BenchArgs, Scenario, Setup};

#[derive(Parser)]
#[command(
    name = "herald-bench",
    version,
    about = "Measure an SSE server: open streams, publish, and time what arrives",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    /// `model`, or the hidden `floor-server`; a scenario is an argument, not a subcommand.
    #[command(subcommand)]
    command: Option<Command>,
    /// The run: present whenever no subcommand is (clap then requires the scenario).
    #[command(flatten)]
    bench: Option<BenchArgs>,
}

#[derive(Subcommand)]
enum Command {
    /// The ideal server of `herald-bench floor`, which starts it as its child
    #[command(name = floor::SERVER_COMMAND, hide = true)]
    FloorServer,
    /// The ideal durable server of `herald-bench targeted-floor`, which starts it as its child
    #[command(name = durable_floor::SERVER_COMMAND, hide = true)]
    DurableFloorServer,
    /// Print docs/scaling.md's capacity model for its three sizes: what each part of today's
    /// cluster design needs and which runs out first, then the same for the sharded design
    Model,
}

fn main() -> std::process::ExitCode {
    // clap's own error and usage output: this is a tool for the people who measure.
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(anyhow::Error::from(error).context("cannot start tokio")),
    };
    let outcome = runtime.block_on(async {
        match (cli.command, cli.bench) {
            // The ideal server runs on std threads and blocks this one; the runtime stays idle.
            (Some(Command::FloorServer), _) => floor::serve_over_stdio(),
            (Some(Command::DurableFloorServer), _) => durable_floor::serve_over_stdio(),
            (Some(Command::Model), _) => {
                println!("Today's design (docs/scaling.md, section 2):\n");
                println!("{}", model::table(&model::SIZES));
                println!("Design C, sharded (docs/scaling.md, section 4):\n");
                print!("{}", model::sharded_table(&model::SIZES));
                Ok(())
            }
            (None, Some(args)) => bench(args).await,
            (None, None) => Err(anyhow::anyhow!("no scenario given")),
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => fail(error),
    }
}

fn fail(error: anyhow::Error) -> std::process::ExitCode {
    eprintln!("herald-bench: {error:#}");
    std::process::ExitCode::FAILURE
}

/// Runs the chosen scenario and prints its report.
async fn bench(mut args: BenchArgs) -> anyhow::Result<()> {
    // targeted-floor is targeted against the durable floor, started here as a child.
    let _durable_floor = if matches!(args.scenario, Scenario::TargetedFloor) {
        let server = durable_floor::DurableFloorProcess::start()?;
        let base = format!("http://127.0.0.1:{}", server.port());
        args.sub_urls = vec![
            parse::parse_sub_url(&format!("{base}/events/{{user}}")).map_err(anyhow::Error::msg)?,
        ];
        args.pub_url = format!("{base}/api/notifications/{{user}}");
        args.server_pids = vec![server.pid()];
        Some(server)
    } else {
        None
    };
    let setup = Setup::new(args)?;
    let report = match setup.args.scenario {
        Scenario::Hold => scenarios::hold(&setup).await,
        Scenario::Fanout => scenarios::fanout(&setup).await?,
        Scenario::Targeted | Scenario::TargetedFloor => scenarios::targeted(&setup).await?,
        Scenario::ManyRecipients => scenarios::many_recipients(&setup).await,
        Scenario::Replay => scenarios::replay(&setup).await,
        Scenario::Floor => scenarios::floor(&setup).await?,
        Scenario::Push => push::offline_users(&setup).await?,
        Scenario::HoldTls => tls::hold_tls(&setup).await?,
    };
    report.print(setup.args.json)
}
