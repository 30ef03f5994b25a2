//! `herald check-config`: the settings `serve` would run with, as a configuration file would
//! spell them, each with where it came from and every secret redacted; or, like `serve`, the
//! first fault, naming its flag or its key in the file (README.md#configuration-file).

use std::io::Write;

use clap::Args;
use clap::parser::ValueSource;
use herald::config::ServeArgs;
use herald::config::file::{CONFIG_ID, Provenance};

/// Flags whose values are secrets: never printed.
const SECRETS: &[&str] = &["jwt-secret", "publish-key"];
/// What a secret is printed as.
const REDACTED: &str = "<redacted>";

pub fn check(
    args: ServeArgs,
    provenance: &Provenance,
    matches: &clap::ArgMatches,
) -> anyhow::Result<()> {
    args.into_settings()
        .map_err(|error| anyhow::anyhow!("{}: {}", provenance.name(error.flag), error.problem))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "# The settings `herald serve` would run with.")?;
    if let Some(file) = &provenance.file {
        writeln!(out, "# config file: {}", file.display())?;
    }
    let serve = ServeArgs::augment_args(clap::Command::new("serve"));
    for arg in serve.get_arguments() {
        let (id, Some(key)) = (arg.get_id().as_str(), arg.get_long()) else {
            continue;
        };
        if id == CONFIG_ID {
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) if provenance.from_file.iter().any(|k| k == key) => {
                "file"
            }
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => {
                writeln!(out, "# {key}: not set")?;
                continue;
            }
        };
        let value = if !arg.get_action().takes_values() {
            matches.get_flag(id).to_string()
        } else {
            let values: Vec<String> = matches
                .get_raw(id)
                .into_iter()
                .flatten()
                .map(|raw| redact(key, &raw.to_string_lossy()))
                .map(|text| toml_value(&text))
                .collect();
            if matches!(arg.get_action(), clap::ArgAction::Append) {
                format!("[{}]", values.join(", "))
            } else {
                values.join(", ")
            }
        };
        writeln!(out, "{key} = {value}  # {source}")?;
    }
    Ok(())
}

/// `raw` as printed: a secret as [`REDACTED`], a URL without its password.
fn redact(key: &str, raw: &str) -> String {
    if SECRETS.contains(&key) {
        return REDACTED.to_owned();
    }
    if let Ok(mut url) = url::Url::parse(raw)
        && url.password().is_some()
        && url.set_password(Some("redacted")).is_ok()
    {
        return url.to_string();
    }
    raw.to_owned()
}

/// A whole number bare, anything else as a TOML string.
fn toml_value(text: &str) -> String {
    if text.parse::<i64>().is_ok() {
        return text.to_owned();
    }
    toml::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_passwords_in_urls_are_redacted() {
        assert_eq!(redact("jwt-secret", "hunter2"), REDACTED);
        assert_eq!(redact("publish-key", "k1"), REDACTED);
        assert_eq!(
            redact("redis-url", "redis://:pw@127.0.0.1:6379/0"),
            "redis://:redacted@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis-url", "redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact("data-dir", "/var/lib/herald"), "/var/lib/herald");
    }
}
