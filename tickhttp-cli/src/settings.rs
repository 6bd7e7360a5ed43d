//! The configuration file of `tickhttp serve --config FILE` and `tickhttp check-config FILE`.
//!
//! A key is its flag's name without the leading dashes and with `_` for `-`
//! (`--max-body-size` is `max_body_size`). Precedence: built-in defaults, then the file, then
//! the flags given on the command line. Every value of the file goes through the same parser
//! as its flag, so `workers = "auto"`, `workers = 4`, `queue_timeout = "500ms"` and
//! `weights = [3, 1, 1]` all mean what the flags mean.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// Flags that are not configuration: they have no key.
const NOT_KEYS: &[&str] = &["config", "help", "version"];

/// A configuration problem, already phrased for the user.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The configuration file's contribution: extra `--key=value` arguments for the keys the
/// command line does not set, and which keys those are.
pub struct FileArgs {
    /// The file.
    pub path: PathBuf,
    /// `--key=value` arguments, to append to the command line.
    pub args: Vec<OsString>,
    /// The keys taken from the file.
    pub keys: BTreeSet<String>,
}

impl FileArgs {
    /// An error about `key` phrased as `FILE: key `k`: reason` when the file set it, else as
    /// `--flag: reason`.
    pub fn describe(file: Option<&FileArgs>, key: &str, reason: &str) -> String {
        match file {
            Some(f) if f.keys.contains(key) => {
                format!("{}: key `{key}`: {reason}", f.path.display())
            }
            _ => format!("--{}: {reason}", key.replace('_', "-")),
        }
    }
}

/// Reads `path` and turns each key into the flag it stands for, checking each value with its
/// flag's parser. `serve` is the `serve` subcommand; `matches` are its matches from the
/// command line (keys given there are skipped: flags override the file).
pub fn load(path: &Path, serve: &Command, matches: &ArgMatches) -> Result<FileArgs, ConfigError> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{file}: cannot read: {e}")))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError(format!("{file}: {}", e.to_string().trim())))?;
    let mut out = FileArgs {
        path: path.to_path_buf(),
        args: Vec::new(),
        keys: BTreeSet::new(),
    };
    for (key, value) in &table {
        let err = |reason: String| ConfigError(format!("{file}: key `{key}`: {reason}"));
        let arg = serve
            .get_arguments()
            .find(|a| a.get_id() == key && is_key(a))
            .ok_or_else(|| err(unknown_key_reason(serve, key)))?;
        if matches.value_source(key) == Some(ValueSource::CommandLine) {
            continue;
        }
        let mut values = Vec::new();
        scalar_values(value, &mut values, true).map_err(err)?;
        if let Some(delim) = arg.get_value_delimiter() {
            values = values
                .iter()
                .flat_map(|v| v.split(delim).map(str::trim).map(String::from))
                .filter(|v| !v.is_empty())
                .collect();
        } else if values.len() > 1 && !takes_many(arg) {
            return Err(err("expected one value, not a list".to_string()));
        }
        for v in &values {
            check_value(arg, v).map_err(err)?;
        }
        let long = arg.get_long().unwrap_or(key);
        match arg.get_value_delimiter() {
            Some(delim) if !values.is_empty() => {
                out.args
                    .push(format!("--{long}={}", values.join(&delim.to_string())).into());
            }
            _ => out.args.extend(
                values
                    .iter()
                    .map(|v| OsString::from(format!("--{long}={v}"))),
            ),
        }
        out.keys.insert(key.clone());
    }
    Ok(out)
}

/// Runs `value` through `arg`'s parser alone, so the error is about this value only.
fn check_value(arg: &clap::Arg, value: &str) -> Result<(), String> {
    let alone = clap::Arg::new(arg.get_id().clone())
        .value_parser(arg.get_value_parser().clone())
        .allow_hyphen_values(true)
        .num_args(1)
        .action(clap::ArgAction::Set);
    Command::new("tickhttp")
        .no_binary_name(true)
        .arg(alone)
        .try_get_matches_from([value])
        .map(drop)
        .map_err(|e| clap_reason(&e))
}

fn is_key(arg: &clap::Arg) -> bool {
    arg.get_long().is_some() && !arg.is_hide_set() && !NOT_KEYS.contains(&arg.get_id().as_str())
}

fn takes_many(arg: &clap::Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.max_values() > 1)
        || matches!(arg.get_action(), clap::ArgAction::Append)
}

fn unknown_key_reason(serve: &Command, key: &str) -> String {
    let normalized = key.trim_start_matches('-').replace('-', "_");
    if normalized != key
        && serve
            .get_arguments()
            .any(|a| a.get_id() == normalized.as_str() && is_key(a))
    {
        return format!("unknown key; did you mean `{normalized}`?");
    }
    "unknown key (the keys are the flags of `tickhttp serve --help`, with _ for -)".to_string()
}

fn scalar_values(value: &toml::Value, out: &mut Vec<String>, top: bool) -> Result<(), String> {
    match value {
        toml::Value::String(s) => out.push(s.clone()),
        toml::Value::Integer(i) => out.push(i.to_string()),
        toml::Value::Float(f) => out.push(f.to_string()),
        toml::Value::Boolean(b) => out.push(b.to_string()),
        toml::Value::Array(items) if top => {
            for item in items {
                scalar_values(item, out, false)?;
            }
        }
        toml::Value::Array(_) => return Err("nested lists are not allowed".to_string()),
        toml::Value::Datetime(_) => return Err("expected a string or a number".to_string()),
        toml::Value::Table(_) => {
            return Err("expected a value, not a table (keys are top-level)".to_string())
        }
    }
    Ok(())
}

/// The useful part of a clap error about one value: its cause, the allowed values, else its
/// message up to the usage line.
pub fn clap_reason(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    use std::error::Error as _;
    if let Some(source) = e.source() {
        return source.to_string();
    }
    if let (Some(ContextValue::String(value)), Some(ContextValue::Strings(valid))) = (
        e.get(ContextKind::InvalidValue),
        e.get(ContextKind::ValidValue),
    ) {
        return format!(
            "invalid value {value:?}; expected one of: {}",
            valid.join(", ")
        );
    }
    let text = e.render().to_string();
    text.lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(|l| l.trim_start_matches("error: ").trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The effective configuration as TOML: every key with its value, and where it came from.
pub fn effective_toml(serve: &Command, matches: &ArgMatches, file: Option<&FileArgs>) -> String {
    let mut out = String::new();
    for arg in serve.get_arguments().filter(|a| is_key(a)) {
        let id = arg.get_id().as_str();
        let source = if file.is_some_and(|f| f.keys.contains(id)) {
            "file"
        } else {
            match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag",
                Some(ValueSource::EnvVariable) => "environment",
                _ => "default",
            }
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if values.is_empty() {
            let _ = writeln!(out, "# {id} is not set");
            continue;
        }
        let rendered = if arg.get_value_delimiter().is_some() || takes_many(arg) {
            let items: Vec<String> = values.iter().map(|v| toml_scalar(v)).collect();
            format!("[{}]", items.join(", "))
        } else {
            toml_scalar(&values[0])
        };
        let _ = writeln!(out, "{id} = {rendered}  # {source}");
    }
    out
}

fn toml_scalar(v: &str) -> String {
    let integer = v.parse::<i64>().is_ok()
        && !v.starts_with('+')
        && !(v.trim_start_matches('-').starts_with('0') && v.trim_start_matches('-').len() > 1);
    if v == "true" || v == "false" || integer {
        v.to_string()
    } else {
        toml::Value::String(v.to_string()).to_string()
    }
}
