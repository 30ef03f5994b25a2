//! README.md#configuration-file: `--config FILE` / `HERALD_CONFIG` (flags, then the
//! environment, then the file, then the defaults; a bad file stops the server naming the key),
//! `herald check-config` (the effective settings, every secret redacted) and
//! `herald healthcheck`.

use std::path::Path;

use reqwest::StatusCode;
use tempfile::TempDir;

use crate::helpers::command::{run_herald, run_serve};
use crate::helpers::{ServerProcess, read_json, send};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("written");
    path.to_str().unwrap().to_owned()
}

/// `herald check-config ARGS` with `envs`: its exit status and stdout.
async fn check_config(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = tokio::process::Command::from(crate::helpers::herald_command(envs));
    command.arg("check-config").args(args).kill_on_drop(true);
    let out = tokio::time::timeout(crate::helpers::WAIT, command.output())
        .await
        .expect("check-config finishes")
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn line<'a>(printed: &'a str, key: &str) -> &'a str {
    printed
        .lines()
        .find(|line| line.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key} = ` line in:\n{printed}"))
}

#[tokio::test]
async fn flags_win_over_the_environment_which_wins_over_the_file_which_wins_over_defaults() {
    let dir = TempDir::new().unwrap();
    let file = write(
        dir.path(),
        "herald.toml",
        "retry-ms = 1111\nheartbeat = 15\nhistory-limit = 50\n",
    );
    let (ok, printed, stderr) = check_config(
        &["--config", &file, "--heartbeat", "20"],
        &[("HERALD_RETRY_MS", "2222")],
    )
    .await;
    assert!(ok, "{stderr}");
    assert_eq!(line(&printed, "heartbeat"), "heartbeat = 20  # flag");
    assert_eq!(line(&printed, "retry-ms"), "retry-ms = 2222  # environment");
    assert_eq!(
        line(&printed, "history-limit"),
        "history-limit = 50  # file"
    );
    assert_eq!(
        line(&printed, "max-connections"),
        "max-connections = 10000  # default"
    );
    // HERALD_CONFIG names the file as --config does.
    let (ok, printed, _) = check_config(&[], &[("HERALD_CONFIG", &file)]).await;
    assert!(ok);
    assert_eq!(line(&printed, "retry-ms"), "retry-ms = 1111  # file");
}

#[tokio::test]
async fn a_server_started_with_only_a_config_file_runs_as_the_file_says() {
    let dir = TempDir::new().unwrap();
    let file = write(
        dir.path(),
        "herald.toml",
        "# as packaged: every key is a flag of serve\n\
         listen = \"127.0.0.1:0\"\n\
         publish-key = [\"file-key-one\", \"file-key-two\"]\n\
         retry-ms = 4321\n",
    );
    let data = dir.path().join("data");
    let server = ServerProcess::start_with(&data, &["--config", &file], &[]);
    let client = reqwest::Client::new();
    let publish = |key: Option<&str>| {
        let mut request = client
            .post(format!("{}/api/notifications/alice", server.url))
            .json(&serde_json::json!({"title": "t", "message": "m"}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request
    };
    let (status, _) = read_json(send(publish(None)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the file's keys are on");
    for key in ["file-key-one", "file-key-two"] {
        let (status, body) = read_json(send(publish(Some(key))).await).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    server.stop();
}

#[tokio::test]
async fn check_config_prints_every_setting_and_no_secret() {
    let dir = TempDir::new().unwrap();
    let file = write(
        dir.path(),
        "herald.toml",
        "jwt-secret = \"s3cret-s3cret-s3cret-s3cret-s3cret\"\n\
         publish-key = [\"key-number-one\", \"key-number-two\"]\n\
         redis-url = \"redis://:hunter2@127.0.0.1:6390/0\"\n",
    );
    let (ok, printed, stderr) = check_config(&["--config", &file], &[]).await;
    assert!(ok, "{stderr}");
    for secret in ["s3cret", "key-number", "hunter2"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert_eq!(
        line(&printed, "jwt-secret"),
        "jwt-secret = \"<redacted>\"  # file"
    );
    assert_eq!(
        line(&printed, "publish-key"),
        "publish-key = [\"<redacted>\", \"<redacted>\"]  # file"
    );
    assert_eq!(
        line(&printed, "redis-url"),
        "redis-url = \"redis://:redacted@127.0.0.1:6390/0\"  # file"
    );
    // Every flag of serve is there, set or not.
    let help = run_herald(&["serve", "--help"]).await;
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in help
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|flag| flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-'))
        .filter(|flag| !["help", "config", "version"].contains(flag) && !flag.is_empty())
    {
        assert!(
            printed.contains(&format!("{flag} = "))
                || printed.contains(&format!("# {flag}: not set")),
            "--{flag} missing from:\n{printed}"
        );
    }
}

#[tokio::test]
async fn a_bad_file_stops_serve_and_check_config_naming_the_file_and_the_key() {
    let dir = TempDir::new().unwrap();
    let cases: [(&str, &[&str]); 6] = [
        ("nope = 1\n", &["unknown key `nope`"]),
        (
            "retention-age = \"soon\"\n",
            &["key `retention-age`", "soon"],
        ),
        (
            "history-limit = 0\n",
            &["key `history-limit`", "at least 1"],
        ),
        (
            "allow-anonymous = \"yes\"\n",
            &["key `allow-anonymous`", "true or false"],
        ),
        ("listen = [\n", &["not TOML"]),
        ("publish-key = [[\"x\"]]\n", &["key `publish-key`", "list"]),
    ];
    for (n, (text, words)) in cases.iter().enumerate() {
        let file = write(dir.path(), &format!("bad{n}.toml"), text);
        let mut expected = vec![file.as_str()];
        expected.extend_from_slice(words);
        run_serve(&["--config", &file], &[]).assert_refused_saying(&expected);
        let (ok, printed, stderr) = check_config(&["--config", &file], &[]).await;
        assert!(!ok, "{text}: {printed}");
        assert!(
            expected.iter().all(|word| stderr.contains(word)),
            "{text}: {stderr}"
        );
    }
    let missing = dir.path().join("missing.toml");
    run_serve(&["--config", missing.to_str().unwrap()], &[])
        .assert_refused_saying(&["missing.toml", "cannot read"]);
}

#[tokio::test]
async fn healthcheck_passes_while_the_server_is_ready_and_fails_once_it_is_gone() {
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path(), &[]);
    let url = server.url.clone();
    let ok = run_herald(&["healthcheck", "--server", &url]).await;
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(ok.stdout, b"");
    server.stop();
    let gone = run_herald(&["healthcheck", "--server", &url]).await;
    assert!(!gone.status.success());
    let stderr = String::from_utf8(gone.stderr).unwrap();
    assert!(stderr.contains("/readyz"), "{stderr}");
}
