//! README.md#packaging: the Debian package's configuration file, `packaging/deb/herald.toml`,
//! holds every flag of `serve` (set, or commented out with its default), `check-config`
//! accepts it as installed, the defaults it shows are the real ones, and `herald.service`
//! gives herald longer to stop than the file lets it drain.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::helpers::command::run_herald;

fn packaged(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/deb")
        .join(name)
}

/// One setting line of the file: `key = value` (set) or `# key = value` (commented out).
struct Setting {
    value: String,
    commented: bool,
}

/// The file's setting lines by key; panics on a key given twice. Prose comments are lines
/// whose text after `# ` is not `key = ...`.
fn settings_of(text: &str) -> BTreeMap<String, Setting> {
    let mut settings = BTreeMap::new();
    for line in text.lines() {
        let (body, commented) = match line.strip_prefix("# ") {
            Some(body) => (body, true),
            None => (line, false),
        };
        let Some((key, value)) = body.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
            continue;
        }
        let setting = Setting {
            value: value.to_owned(),
            commented,
        };
        assert!(
            settings.insert(key.to_owned(), setting).is_none(),
            "`{key}` appears twice"
        );
    }
    settings
}

/// The long flags `herald serve --help` lists, but --help, --version and --config (which a
/// file cannot set).
async fn serve_flags() -> Vec<String> {
    let help = run_herald(&["serve", "--help"]).await;
    assert!(help.status.success());
    String::from_utf8(help.stdout)
        .unwrap()
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| {
            let long = line.split_whitespace().find(|w| w.starts_with("--"))?;
            Some(
                long.trim_start_matches("--")
                    .trim_end_matches(',')
                    .to_owned(),
            )
        })
        .filter(|flag| !["help", "version", "config"].contains(&flag.as_str()))
        .collect()
}

/// `herald check-config --config FILE`'s lines by key: `(value, source)`, or `None` for
/// a setting that is not set.
async fn effective(file: &std::path::Path) -> BTreeMap<String, Option<(String, String)>> {
    let out = run_herald(&["check-config", "--config", file.to_str().unwrap()]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check-config refused {file:?}: {stderr}"
    );
    let mut printed = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        if let Some(unset) = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(": not set"))
        {
            printed.insert(unset.to_owned(), None);
        } else if let Some((key, rest)) = line.split_once(" = ") {
            let (value, source) = rest.rsplit_once("  # ").expect("a source");
            printed.insert(key.to_owned(), Some((value.to_owned(), source.to_owned())));
        }
    }
    printed
}

#[tokio::test]
async fn the_packaged_config_file_has_every_flag_of_serve_and_nothing_else() {
    let text = std::fs::read_to_string(packaged("herald.toml")).unwrap();
    let settings = settings_of(&text);
    let flags = serve_flags().await;
    assert!(flags.len() > 30, "read the flags from --help: {flags:?}");
    for flag in &flags {
        assert!(
            settings.contains_key(flag),
            "--{flag} is missing from packaging/deb/herald.toml: add `# {flag} = DEFAULT` with one line saying what it does"
        );
    }
    for key in settings.keys() {
        assert!(
            flags.contains(key),
            "packaging/deb/herald.toml has `{key}`, which is not a flag of serve"
        );
    }
}

#[tokio::test]
async fn the_packaged_config_file_serves_on_loopback_from_var_lib_herald() {
    let printed = effective(&packaged("herald.toml")).await;
    let from_file = |value: &str| Some((value.to_owned(), "file".to_owned()));
    assert_eq!(printed["listen"], from_file("\"127.0.0.1:3000\""));
    assert_eq!(printed["data-dir"], from_file("\"/var/lib/herald\""));
    let set: Vec<_> = printed
        .iter()
        .filter(|(_, value)| matches!(value, Some((_, source)) if source == "file"))
        .map(|(key, _)| key.as_str())
        .collect();
    assert_eq!(
        set,
        ["data-dir", "listen"],
        "everything else is at its default"
    );
}

#[tokio::test]
async fn every_default_the_packaged_config_file_shows_is_the_real_one() {
    let path = packaged("herald.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let as_packaged = effective(&path).await;
    // A commented line of a setting that has a default shows that default; the others
    // (auth, TLS, Redis, ...) show examples.
    let with_default: Vec<String> = settings_of(&text)
        .into_iter()
        .filter(|(key, setting)| setting.commented && as_packaged[key].is_some())
        .map(|(key, _)| key)
        .collect();
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(body)
                if with_default
                    .iter()
                    .any(|k| body.starts_with(&format!("{k} = "))) =>
            {
                body
            }
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let every_default = dir.path().join("herald.toml");
    std::fs::write(&every_default, &uncommented).unwrap();
    let written_out = effective(&every_default).await;
    let shown = settings_of(&text);
    for key in &with_default {
        let shown = &shown[key].value;
        let default = as_packaged[key].clone().unwrap();
        assert_eq!(
            (shown.as_str(), default.1.as_str()),
            (default.0.as_str(), "default"),
            "`# {key} = {shown}`: herald's default is another"
        );
        // A switch set to false in a file is the same as leaving it out.
        let source = if shown == "false" { "default" } else { "file" };
        assert_eq!(
            written_out[key],
            Some((shown.clone(), source.to_owned())),
            "`{key} = {shown}` uncommented"
        );
    }
    // Every example, uncommented, is TOML of the right shape too.
    let everything: String = text
        .lines()
        .map(|line| match settings_of(line).into_iter().next() {
            Some((key, setting)) => format!("{key} = {}\n", setting.value),
            None => format!("{line}\n"),
        })
        .collect();
    let table: toml::Table = toml::from_str(&everything).expect("every line uncommented is TOML");
    assert_eq!(table.len(), shown.len());
}

#[tokio::test]
async fn the_unit_gives_herald_longer_to_stop_than_it_drains() {
    let unit = std::fs::read_to_string(packaged("herald.service")).unwrap();
    let directive = |name: &str| {
        unit.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("herald.service has no {name}="))
            .to_owned()
    };
    assert_eq!(
        directive("ExecStart"),
        "/usr/bin/herald serve --config /etc/herald/herald.toml"
    );
    let printed = effective(&packaged("herald.toml")).await;
    let (drain, _) = printed["shutdown-timeout"].clone().unwrap();
    let drain: u64 = drain.parse().unwrap();
    let stop: u64 = directive("TimeoutStopSec").parse().unwrap();
    assert!(
        stop >= drain + 10,
        "TimeoutStopSec={stop} leaves too little past shutdown-timeout = {drain}"
    );
}
