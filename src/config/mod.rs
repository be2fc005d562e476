//! `serve` configuration: flags, then `LOGMESH_*` environment variables (plus the log
//! monitoring seed's `BATCHSIZE` and `FLUSHINTERVAL`), then an optional TOML file, then
//! defaults. The first source that sets a value wins; every value is checked here, so a bad
//! one is a start-up error that names its source, never a panic later.
//!
//! The settings themselves are declared once, in [`settings::SETTINGS`]: the command line
//! ([`ServeArgs`]), the file's keys and the resolution ([`resolve`]) are made from them.

pub mod settings;

use crate::node::NodeConfig;
use crate::store::{DatabaseUrl, redact_url};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use settings::{SETTINGS, Secret, ValueKind, setting};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The flags of `logmesh serve`, as given: each optional, so that the environment, the file
/// and the defaults can fill in what the command line leaves out. Made from
/// [`settings::SETTINGS`].
#[derive(Debug, Clone, Default)]
pub struct ServeArgs {
    /// Values given as flags, by setting key; a repeated flag (a list) has several.
    pub flags: BTreeMap<&'static str, Vec<String>>,
    /// `--config FILE`.
    pub config: Option<PathBuf>,
}

impl ServeArgs {
    /// These flags plus `--key value` (for tests and embedders).
    pub fn with(mut self, key: &str, value: &str) -> ServeArgs {
        let setting = setting(key).unwrap_or_else(|| panic!("no setting is named {key}"));
        self.flags
            .entry(setting.key)
            .or_default()
            .push(value.to_owned());
        self
    }
}

const CONFIG_FLAG: &str = "config";

impl Args for ServeArgs {
    fn augment_args(mut command: Command) -> Command {
        let defaults = NodeConfig::default();
        for setting in SETTINGS {
            let arg = Arg::new(setting.key)
                .long(setting.key)
                .help(setting.help_line(&defaults));
            command = command.arg(match setting.value {
                ValueKind::One(name) => arg.value_name(name).action(ArgAction::Set),
                ValueKind::Switch => arg.action(ArgAction::SetTrue),
                ValueKind::List(name, _) => arg.value_name(name).action(ArgAction::Append),
            });
        }
        command.arg(
            Arg::new(CONFIG_FLAG)
                .long(CONFIG_FLAG)
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help(
                    "TOML file with any of these settings, keys spelled like the flags \
                     (batch-size = 5000) [env: LOGMESH_CONFIG]",
                ),
        )
    }

    fn augment_args_for_update(command: Command) -> Command {
        Self::augment_args(command)
    }
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = ServeArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for setting in SETTINGS {
            let values: Vec<String> = match setting.value {
                ValueKind::Switch if matches.get_flag(setting.key) => vec!["true".to_owned()],
                ValueKind::Switch => Vec::new(),
                _ => matches
                    .get_many::<String>(setting.key)
                    .map(|values| values.cloned().collect())
                    .unwrap_or_default(),
            };
            if !values.is_empty() {
                self.flags.insert(setting.key, values);
            }
        }
        if let Some(path) = matches.get_one::<PathBuf>(CONFIG_FLAG) {
            self.config = Some(path.clone());
        }
        Ok(())
    }
}

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf, &'static str),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "--{name}"),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::File(path, key) => write!(f, "`{key}` in {}", path.display()),
            Source::Default => f.write_str("the default"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("invalid value {value:?} for {origin}: {reason}")]
    Invalid {
        value: String,
        origin: Source,
        reason: String,
    },
    #[error("cannot read the config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Conflict(String),
}

/// The raw value of a setting from the first source that sets it (a list: one item per line).
fn raw_value(
    setting: &'static settings::Setting,
    args: &ServeArgs,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&(PathBuf, BTreeMap<String, String>)>,
) -> Option<(String, Source)> {
    if let Some(values) = args.flags.get(setting.key) {
        return Some((values.join("\n"), Source::Flag(setting.key)));
    }
    for name in setting.env {
        if let Some(value) = env(name).filter(|v| !v.is_empty()) {
            let value = match setting.value {
                ValueKind::List(_, separator) => {
                    value.split(separator).collect::<Vec<_>>().join("\n")
                }
                _ => value,
            };
            return Some((value, Source::Env(name)));
        }
    }
    let (path, table) = file?;
    table
        .get(setting.key)
        .map(|value| (value.clone(), Source::File(path.clone(), setting.key)))
}

/// Resolves the node configuration. `env` reads an environment variable (injected so tests do
/// not touch the process environment).
pub fn resolve(
    args: &ServeArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<NodeConfig, ConfigError> {
    let config_path = args.config.clone().or_else(|| {
        env("LOGMESH_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let file = match config_path {
        Some(path) => {
            let table = read_file(&path)?;
            Some((path, table))
        }
        None => None,
    };
    let mut config = NodeConfig::default();
    for setting in SETTINGS {
        let Some((value, origin)) = raw_value(setting, args, env, file.as_ref()) else {
            continue;
        };
        (setting.apply)(&mut config, &value).map_err(|reason| ConfigError::Invalid {
            value: match setting.secret {
                Secret::No => value.clone(),
                // A database URL may hold a password, a token is one: never echo them.
                Secret::Url => redact_url(&value),
                Secret::Whole => "***".into(),
            },
            origin,
            reason,
        })?;
    }
    check(&config)?;
    Ok(config)
}

/// The rules between settings.
fn check(config: &NodeConfig) -> Result<(), ConfigError> {
    if let Some(cluster) = &config.cluster {
        if matches!(config.database, DatabaseUrl::Sqlite(_)) {
            return Err(ConfigError::Conflict(
                "--nats needs a database every node shares: set --database to a postgres:// or \
                 mysql:// URL (each node's own SQLite file would hold only part of the events)"
                    .into(),
            ));
        }
        if cluster.max_ack_pending < config.batch_size {
            return Err(ConfigError::Conflict(format!(
                "nats-max-ack-pending ({}) is smaller than batch-size ({}): a store writer could \
                 never fetch a whole batch",
                cluster.max_ack_pending, config.batch_size
            )));
        }
        if cluster.ack_wait <= config.flush_interval * 2 {
            return Err(ConfigError::Conflict(format!(
                "nats-ack-wait ({}) must be more than twice flush-interval ({}): a writer still \
                 filling its batch would see the batch redelivered elsewhere",
                humantime::format_duration(cluster.ack_wait),
                humantime::format_duration(config.flush_interval)
            )));
        }
    }
    if config.queue_limits.max_bytes < config.max_body_bytes {
        return Err(ConfigError::Conflict(format!(
            "queue-max-bytes ({}) is smaller than max-body-bytes ({}): a request of the largest \
             allowed size could never be queued",
            config.queue_limits.max_bytes, config.max_body_bytes
        )));
    }
    if let Some(total) = config.event_log.max_total_bytes
        && total < config.event_log.max_bytes.saturating_mul(2)
    {
        return Err(ConfigError::Conflict(format!(
            "event-log-max-total-bytes ({}) is less than twice event-log-max-bytes ({}): the \
             file being written alone could take the whole total",
            crate::units::format_size(total),
            crate::units::format_size(config.event_log.max_bytes)
        )));
    }
    if config.work.max_results_bytes < config.work.max_result_bytes {
        return Err(ConfigError::Conflict(format!(
            "work-max-results-bytes ({}) is smaller than work-max-result-bytes ({}): a result of \
             the largest allowed size could never be kept",
            config.work.max_results_bytes, config.work.max_result_bytes
        )));
    }
    Ok(())
}

/// Reads a TOML file into key → raw value (a list: one item per line), rejecting unknown keys
/// and nested tables.
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string().trim_end().replace('\n', " ")))?;
    let mut values = BTreeMap::new();
    for (key, value) in table {
        let Some(setting) = setting(&key) else {
            let known: Vec<&str> = SETTINGS.iter().map(|setting| setting.key).collect();
            return Err(file_error(format!(
                "unknown key `{key}` (known keys: {})",
                known.join(", ")
            )));
        };
        let raw = match value {
            toml::Value::Array(items) if matches!(setting.value, ValueKind::List(..)) => {
                let mut list = Vec::new();
                for item in items {
                    match item {
                        toml::Value::String(item) if !item.contains('\n') => list.push(item),
                        other => {
                            return Err(file_error(format!(
                                "`{key}` must list names, not {}",
                                other.type_str()
                            )));
                        }
                    }
                }
                list.join("\n")
            }
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(file_error(format!(
                    "`{key}` must be a string, an integer or a boolean, not {}",
                    other.type_str()
                )));
            }
        };
        values.insert(key, raw);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::CounterLimits;
    use crate::http::HttpLimits;
    use crate::work::WorkSettings;
    use std::collections::HashMap;
    use std::time::Duration;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn no_env() -> impl Fn(&str) -> Option<String> {
        env_of(&[])
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = resolve(&ServeArgs::default(), &no_env()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:5555");
        assert_eq!(config.data_dir, PathBuf::from("./logmesh-data"));
        assert_eq!(
            config.database,
            DatabaseUrl::Sqlite(PathBuf::from("./logmesh-data/logmesh.db"))
        );
        assert_eq!(config.batch_size, 5000);
        assert_eq!(config.flush_interval, Duration::from_secs(1));
        assert_eq!(config.max_body_bytes, 10 << 20);
        assert!(!config.node_name.is_empty());
        assert_eq!(config.api_token, None);
        assert!(!config.insecure);
    }

    #[test]
    fn flags_beat_environment_beats_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("logmesh.toml");
        std::fs::write(
            &file,
            "batch-size = 10\nflush-interval = \"20s\"\nnode-name = \"from-file\"\nqueue-max-events = 77\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        }
        .with("batch-size", "30");
        let env = env_of(&[
            ("LOGMESH_BATCH_SIZE", "20"),
            ("LOGMESH_FLUSH_INTERVAL", "500ms"),
        ]);
        let config = resolve(&args, &env).unwrap();
        assert_eq!(config.batch_size, 30, "flag wins over env and file");
        assert_eq!(
            config.flush_interval,
            Duration::from_millis(500),
            "env wins over file"
        );
        assert_eq!(config.node_name, "from-file", "file wins over default");
        assert_eq!(config.queue_limits.max_events, 77);
        assert_eq!(
            config.queue_limits.max_bytes,
            crate::queue::QueueLimits::default().max_bytes,
            "default last"
        );
    }

    #[test]
    fn seed_variables_batchsize_and_flushinterval_are_honoured() {
        let env = env_of(&[("BATCHSIZE", "10"), ("FLUSHINTERVAL", "20")]);
        let config = resolve(&ServeArgs::default(), &env).unwrap();
        assert_eq!(config.batch_size, 10);
        assert_eq!(config.flush_interval, Duration::from_secs(20));
        let both = env_of(&[("BATCHSIZE", "10"), ("LOGMESH_BATCH_SIZE", "11")]);
        assert_eq!(
            resolve(&ServeArgs::default(), &both).unwrap().batch_size,
            11
        );
    }

    #[test]
    fn log_roots_come_from_repeated_flags_a_colon_list_or_a_toml_array() {
        let default = resolve(&ServeArgs::default(), &no_env()).unwrap();
        assert_eq!(
            default.log_roots,
            [PathBuf::from("./logmesh-data/eventlog")]
        );
        let args = ServeArgs::default()
            .with("log-root", "/var/log/a")
            .with("log-root", "/var/log/b");
        let env = env_of(&[("LOGMESH_LOG_ROOT", "/x:/y")]);
        let config = resolve(&args, &env).unwrap();
        assert_eq!(
            config.log_roots,
            [PathBuf::from("/var/log/a"), "/var/log/b".into()]
        );
        let config = resolve(&ServeArgs::default(), &env).unwrap();
        assert_eq!(config.log_roots, [PathBuf::from("/x"), "/y".into()]);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        for (toml, expected) in [
            ("log-root = [\"/p\", \"/q\"]\n", vec!["/p", "/q"]),
            ("log-root = \"/p\"\n", vec!["/p"]),
        ] {
            std::fs::write(&file, toml).unwrap();
            let args = ServeArgs {
                config: Some(file.clone()),
                ..ServeArgs::default()
            };
            let config = resolve(&args, &no_env()).unwrap();
            let expected: Vec<PathBuf> = expected.into_iter().map(PathBuf::from).collect();
            assert_eq!(config.log_roots, expected);
        }
        std::fs::write(&file, "log-root = [1]\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..ServeArgs::default()
        };
        assert!(resolve(&args, &no_env()).is_err());
    }

    #[test]
    fn the_config_file_may_come_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "insecure = true\nlisten = \"0.0.0.0:9000\"\n").unwrap();
        let env = env_of(&[("LOGMESH_CONFIG", file.to_str().unwrap())]);
        let config = resolve(&ServeArgs::default(), &env).unwrap();
        assert!(config.insecure);
        assert_eq!(config.listen, "0.0.0.0:9000");
    }

    #[test]
    fn cluster_settings_resolve_with_their_defaults() {
        let env = env_of(&[
            ("LOGMESH_NATS", "nats://10.0.0.1:4222"),
            ("LOGMESH_DATABASE", "postgres://logmesh@db/logmesh"),
            ("LOGMESH_MEMBER_TTL", "5s"),
        ]);
        let config = resolve(&ServeArgs::default(), &env).unwrap();
        let cluster = config.cluster.expect("cluster shape");
        assert_eq!(cluster.nats_url, "nats://10.0.0.1:4222");
        assert_eq!(cluster.stream, "LOGMESH_EVENTS");
        assert_eq!(cluster.subject, "logmesh.events");
        assert_eq!(cluster.member_ttl, Duration::from_secs(5));
        assert_eq!(cluster.replica_max_offline, Duration::from_secs(24 * 3600));
        assert_eq!(cluster.membership_bucket(), "LOGMESH_EVENTS_members");
        assert!(
            resolve(&ServeArgs::default(), &no_env())
                .unwrap()
                .cluster
                .is_none()
        );
    }

    #[test]
    fn limits_resolve_from_flags_environment_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("logmesh.toml");
        std::fs::write(
            &file,
            "allowed-hosts = [\"logs.example.com\", \".corp.example\"]\ncounter-max-series = 20\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        }
        .with("max-file-streams", "8");
        let env = env_of(&[
            ("LOGMESH_BODY_MIN_RATE", "1KiB"),
            ("LOGMESH_TAIL_BUFFER_BYTES", "1MiB"),
        ]);
        let config = resolve(&args, &env).unwrap();
        assert_eq!(config.http.max_file_streams, 8);
        assert_eq!(config.http.body_pace.min_rate, 1024);
        assert_eq!(config.tail_buffer_bytes, 1 << 20);
        assert_eq!(
            config.http.allowed_hosts,
            ["logs.example.com", ".corp.example"]
        );
        assert_eq!(config.counters.max_series, 20);
        let defaults = resolve(&ServeArgs::default(), &no_env()).unwrap();
        assert_eq!(defaults.http, HttpLimits::default());
        assert_eq!(defaults.counters, CounterLimits::default());
        assert_eq!(defaults.work, WorkSettings::default());
    }

    #[test]
    fn invalid_values_are_errors_that_name_their_source() {
        type Case = (ServeArgs, Vec<(&'static str, &'static str)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                ServeArgs::default().with("api-token", ""),
                vec![],
                "invalid value \"***\" for --api-token: an empty token would refuse every request",
            ),
            (
                ServeArgs::default().with("max-connections", "0"),
                vec![],
                "invalid value \"0\" for --max-connections: must be between 1 and 1000000",
            ),
            (
                ServeArgs::default(),
                vec![("LOGMESH_BODY_MIN_RATE", "fast")],
                "for environment variable LOGMESH_BODY_MIN_RATE: expected a size",
            ),
            (
                ServeArgs::default().with("header-read-timeout", "1ms"),
                vec![],
                "for --header-read-timeout: must be at least 100ms",
            ),
            (
                ServeArgs::default().with("allowed-hosts", "logs.example.com, bad/host"),
                vec![],
                "for --allowed-hosts: `bad/host` is not a host name",
            ),
            (
                ServeArgs::default().with("syslog-listen", "tcp://localhost:514"),
                vec![],
                "for --syslog-listen: `tcp://localhost:514`: `localhost:514` is not IP:PORT",
            ),
            (
                ServeArgs::default().with("syslog-listen", "ftp://127.0.0.1:6514"),
                vec![],
                "for --syslog-listen: `ftp://127.0.0.1:6514`: unknown transport `ftp`",
            ),
            (
                ServeArgs::default().with("retention", "a week"),
                vec![],
                "for --retention:",
            ),
            (
                ServeArgs::default().with("late-events", "keep"),
                vec![],
                "for --late-events: expected refuse or expire",
            ),
            (
                ServeArgs::default().with("max-store-bytes", "lots"),
                vec![],
                "for --max-store-bytes:",
            ),
            (
                ServeArgs::default().with("max-store-bytes", "1KiB"),
                vec![],
                "for --max-store-bytes:",
            ),
            (
                ServeArgs::default().with("min-free-disk", "lots"),
                vec![],
                "for --min-free-disk:",
            ),
            (
                ServeArgs::default().with("event-log-retention", "soon"),
                vec![],
                "for --event-log-retention:",
            ),
            (
                ServeArgs::default().with("event-log-max-total-bytes", "150MiB"),
                vec![],
                "event-log-max-total-bytes (150MiB) is less than twice event-log-max-bytes (100MiB)",
            ),
            (
                ServeArgs::default().with("syslog-tls-cert", " "),
                vec![],
                "for --syslog-tls-cert: expected a file",
            ),
            (
                ServeArgs::default().with("syslog-service", "program"),
                vec![],
                "for --syslog-service: `program` is not app-name, hostname, facility, msgid or fixed:NAME",
            ),
            (
                ServeArgs::default().with("syslog-service", "fixed:two words"),
                vec![],
                "for --syslog-service: the service `two words`",
            ),
            (
                ServeArgs::default(),
                vec![("LOGMESH_SYSLOG_ALLOW", "10.0.0.0/8,10.0.0.0/33")],
                "`10.0.0.0/33` is not a network",
            ),
            (
                ServeArgs::default().with("counter-max-labels", "65"),
                vec![],
                "for --counter-max-labels: must be between 0 and 64",
            ),
            (
                ServeArgs::default()
                    .with("work-max-result-bytes", "2GiB")
                    .with("work-max-results-bytes", "1GiB"),
                vec![],
                "work-max-results-bytes (1073741824) is smaller than work-max-result-bytes",
            ),
            (
                ServeArgs::default().with("batch-size", "many"),
                vec![],
                "invalid value \"many\" for --batch-size: expected a whole number",
            ),
            (
                ServeArgs::default(),
                vec![("BATCHSIZE", "0")],
                "invalid value \"0\" for environment variable BATCHSIZE: must be between 1 and 1000000",
            ),
            (
                ServeArgs::default(),
                vec![("FLUSHINTERVAL", "soon")],
                "invalid value \"soon\" for environment variable FLUSHINTERVAL:",
            ),
            (
                ServeArgs::default().with("listen", "5555"),
                vec![],
                "invalid value \"5555\" for --listen: expected ADDR:PORT",
            ),
            (
                ServeArgs::default().with("listen", "127.0.0.1:99999"),
                vec![],
                "`99999` is not a port number",
            ),
            (
                ServeArgs::default().with("database", "oracle://u:secret@x/db"),
                vec![],
                "invalid value \"oracle://u:***@x/db\" for --database: \
                 `oracle://u:***@x/db` is not a database URL",
            ),
            (
                ServeArgs::default().with("node-name", "my node"),
                vec![],
                "for --node-name: `my node` contains whitespace",
            ),
            (
                ServeArgs::default().with("api-token", "s3cret token"),
                vec![],
                "invalid value \"***\" for --api-token: tokens cannot contain whitespace",
            ),
            (
                ServeArgs::default(),
                vec![("LOGMESH_TAIL_BUFFER", "0")],
                "for environment variable LOGMESH_TAIL_BUFFER: must be between 1 and 1000000",
            ),
            (
                ServeArgs::default().with("work-concurrency", "1025"),
                vec![],
                "for --work-concurrency: must be between 0 and 1024",
            ),
            (
                ServeArgs::default().with("work-max-queued", "0"),
                vec![],
                "for --work-max-queued: must be between 1 and 10000000",
            ),
            (
                ServeArgs::default(),
                vec![("LOGMESH_WORK_MAX_QUEUED", "lots")],
                "for environment variable LOGMESH_WORK_MAX_QUEUED",
            ),
            (
                ServeArgs::default(),
                vec![("LOGMESH_WORK_TTL", "ten minutes")],
                "for environment variable LOGMESH_WORK_TTL",
            ),
            (
                ServeArgs::default().with("work-max-attempts", "0"),
                vec![],
                "for --work-max-attempts: must be between 1 and 100",
            ),
            (
                ServeArgs::default().with("work-retry-backoff", "2m"),
                vec![],
                "for --work-retry-backoff",
            ),
            (
                ServeArgs::default(),
                vec![("LOGMESH_INSECURE", "maybe")],
                "for environment variable LOGMESH_INSECURE: expected true or false",
            ),
            (
                ServeArgs::default().with("log-format", "xml"),
                vec![],
                "expected human or json",
            ),
            (
                ServeArgs::default().with("queue-max-bytes", "1MiB"),
                vec![],
                "queue-max-bytes (1048576) is smaller than max-body-bytes",
            ),
            (
                ServeArgs::default().with("nats", "nats://127.0.0.1:4222"),
                vec![],
                "--nats needs a database every node shares",
            ),
            (
                ServeArgs::default().with("nats", "127.0.0.1:4222"),
                vec![],
                "for --nats: expected nats://HOST:PORT",
            ),
            (
                ServeArgs::default()
                    .with("nats", "nats://127.0.0.1:4222")
                    .with("database", "postgres://u@h/db")
                    .with("nats-stream", "my.stream"),
                vec![],
                "for --nats-stream: expected 1-64 letters, digits",
            ),
            (
                ServeArgs::default()
                    .with("nats", "nats://127.0.0.1:4222")
                    .with("database", "postgres://u@h/db")
                    .with("nats-subject", "logs.>"),
                vec![],
                "for --nats-subject: expected a NATS subject",
            ),
            (
                ServeArgs::default()
                    .with("nats", "nats://127.0.0.1:4222")
                    .with("database", "postgres://u@h/db")
                    .with("batch-size", "5000")
                    .with("nats-max-ack-pending", "100"),
                vec![],
                "nats-max-ack-pending (100) is smaller than batch-size (5000)",
            ),
            (
                ServeArgs::default()
                    .with("nats", "nats://127.0.0.1:4222")
                    .with("database", "postgres://u@h/db")
                    .with("flush-interval", "20s"),
                vec![],
                "nats-ack-wait (30s) must be more than twice flush-interval (20s)",
            ),
            (
                ServeArgs::default()
                    .with("nats", "nats://127.0.0.1:4222")
                    .with("database", "postgres://u@h/db")
                    .with("member-ttl", "100ms"),
                vec![],
                "for --member-ttl: must be at least 1s",
            ),
            (
                ServeArgs::default()
                    .with("nats", "nats://127.0.0.1:4222")
                    .with("database", "postgres://u@h/db")
                    .with("replica-max-offline", "forever"),
                vec![],
                "for --replica-max-offline:",
            ),
            (
                ServeArgs::default().with("advertise", "node-1:5555"),
                vec![],
                "for --advertise: expected http://HOST:PORT",
            ),
        ];
        for (args, env, expected) in cases {
            let error = resolve(&args, &env_of(&env)).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "got {error:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn bad_config_files_are_rejected_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "batch-size = 5000\nbatchsize = 3\n",
                "unknown key `batchsize`",
            ),
            (
                "batch-size = [1]\n",
                "must be a string, an integer or a boolean, not array",
            ),
            ("batch-size = \n", "cannot read the config file"),
            (
                "batch-size = \"x\"\n",
                "invalid value \"x\" for `batch-size` in",
            ),
        ];
        for (text, expected) in cases {
            let file = dir.path().join("bad.toml");
            std::fs::write(&file, text).unwrap();
            let args = ServeArgs {
                config: Some(file),
                ..ServeArgs::default()
            };
            let error = resolve(&args, &no_env()).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "got {error:?}, expected {expected:?}"
            );
        }
        let args = ServeArgs {
            config: Some(dir.path().join("missing.toml")),
            ..ServeArgs::default()
        };
        let error = resolve(&args, &no_env()).unwrap_err().to_string();
        assert!(error.starts_with("cannot read the config file"), "{error}");
    }

    #[test]
    fn the_documented_table_is_the_declarations() {
        let readme = include_str!("../../docs/configuration.md");
        let expected = settings::markdown_table();
        let start = readme
            .find("| flag / TOML key |")
            .expect("docs/configuration.md has the configuration table");
        let end = readme[start..]
            .find("\n\n")
            .map_or(readme.len(), |end| start + end + 1);
        assert!(
            readme[start..end] == expected,
            "docs/configuration.md's table differs from the settings declared in \
             src/config/settings.rs; it should read:\n\n{expected}"
        );
    }

    #[test]
    fn every_setting_is_a_flag_an_environment_variable_and_a_file_key() {
        let command = ServeArgs::augment_args(Command::new("serve"));
        let help = command.clone().render_help().to_string();
        for setting in SETTINGS {
            assert!(
                help.contains(&format!("--{}", setting.key)),
                "{}",
                setting.key
            );
            assert!(setting.env[0].starts_with("LOGMESH_"), "{}", setting.key);
            assert_eq!(
                setting.env[0],
                format!("LOGMESH_{}", setting.key.replace('-', "_").to_uppercase()),
                "the LOGMESH_ variable is named after the key"
            );
        }
        let matches = command
            .try_get_matches_from([
                "serve",
                "--batch-size",
                "7",
                "--log-root",
                "/a",
                "--log-root",
                "/b",
                "--insecure",
            ])
            .unwrap();
        let args = ServeArgs::from_arg_matches(&matches).unwrap();
        assert_eq!(args.flags["batch-size"], ["7"]);
        assert_eq!(args.flags["log-root"], ["/a", "/b"]);
        assert_eq!(args.flags["insecure"], ["true"]);
    }
}
