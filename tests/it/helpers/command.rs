//! One-shot `herald` commands run to their end, each wait with a timeout.

use std::process::Output;

use super::WAIT;
use super::process::herald_command;

/// Runs `herald ARGS` to completion (killed after [`WAIT`]) with no `HERALD_*` from the test's
/// environment.
pub async fn run_herald(args: &[&str]) -> Output {
    let mut command = tokio::process::Command::from(herald_command(&[]));
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("herald {args:?} did not finish in time"))
        .expect("herald runs")
}
