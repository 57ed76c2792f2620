//! Settings from a config file and the environment, for every role:
//! `/etc/cairn/cairn.toml` (or `--config FILE`, `CAIRN_CONFIG`) and
//! `CAIRN_<FLAG>` variables. A flag given on the command line wins, then
//! the environment, then the file, then the built-in default.
//!
//! The file has a section per role, keyed by the role's long flag names
//! (`-` or `_` alike), and top-level keys for the flags every command takes:
//!
//! ```toml
//! tls = "on"
//! log-format = "json"
//!
//! [meta]
//! data = "/var/lib/cairn/meta"
//! store = "etcd://10.0.0.1:2379,10.0.0.2:2379/cairn"
//! metrics-listen = "0.0.0.0:7490"
//!
//! [storage]
//! meta = "meta1:7420,meta2:7420"
//! zone = "rack1"
//! tier = ["cold=s3://bucket/cairn?endpoint=http://minio:9000"]
//!
//! [client]          # every client command, the mount and the gateway
//! meta = "meta1:7420"
//! secret-file = "/etc/cairn/client.key"
//! ```
//!
//! Sections: `server`, `meta`, `storage`, `gateway` (`cairn gateway s3`),
//! `mount`, `client`. The settings become command-line flags before clap
//! parses them, so they are checked exactly as flags are; an unknown
//! section or key is an error naming it and its line.
//!
//! Written by hand rather than with a layered-config crate: clap already
//! knows every flag, its type and its default, and this keeps one
//! definition of each setting.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Arg, ArgAction, Command};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The file read when neither `--config` nor `CAIRN_CONFIG` names one.
pub const DEFAULT_FILE: &str = "/etc/cairn/cairn.toml";

/// The sections of the file and the command each applies to.
const SECTIONS: [(&str, &[&str]); 5] = [
    ("server", &["server"]),
    ("meta", &["meta"]),
    ("storage", &["storage"]),
    ("gateway", &["gateway", "s3"]),
    ("mount", &["mount"]),
];
/// Keys of `[client]`: the target of every command that talks to a
/// cluster.
const CLIENT_KEYS: [&str; 2] = ["meta", "secret-file"];
/// Top-level keys: flags of every command.
const GLOBAL_KEYS: [&str; 3] = ["log-format", "tls", "quiet"];

/// One setting read from the file.
#[derive(Clone, Debug)]
pub struct Setting {
    pub section: String,
    pub key: String,
    pub values: Vec<String>,
    pub line: usize,
}

/// A parsed config file.
#[derive(Debug, Default)]
pub struct File {
    pub path: PathBuf,
    pub settings: Vec<Setting>,
}

fn flag_name(key: &str) -> String {
    key.replace('_', "-")
}

/// The line (1-based) where `key` is set in `section` of `text`.
fn line_of(text: &str, section: &str, key: &str) -> usize {
    let mut current = String::new();
    for (n, l) in text.lines().enumerate() {
        let t = l.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.split(']').next()) {
            current = h.trim().to_string();
            continue;
        }
        let k = t.split('=').next().unwrap_or("").trim().trim_matches('"');
        if current == section && k == key {
            return n + 1;
        }
    }
    0
}

fn values_of(v: &toml::Value) -> Option<Vec<String>> {
    Some(match v {
        toml::Value::String(s) => vec![s.clone()],
        toml::Value::Integer(i) => vec![i.to_string()],
        toml::Value::Float(f) => vec![f.to_string()],
        toml::Value::Boolean(b) => vec![b.to_string()],
        toml::Value::Array(a) => {
            let mut out = Vec::new();
            for x in a {
                match x {
                    toml::Value::Array(_) | toml::Value::Table(_) => return None,
                    x => out.extend(values_of(x)?),
                }
            }
            out
        }
        _ => return None,
    })
}

impl File {
    /// Read and check `path` against the flags `cli` knows.
    pub fn load(path: &Path, cli: &Command) -> Result<File> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        File::parse(path, &text, cli)
    }

    fn parse(path: &Path, text: &str, cli: &Command) -> Result<File> {
        let shown = path.display();
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| anyhow!("{shown}: {e}"))?;
        let mut settings = Vec::new();
        let mut add = |section: &str, key: &str, v: &toml::Value| -> Result<()> {
            let line = line_of(text, section, key);
            let values = values_of(v).ok_or_else(|| {
                anyhow!("{shown} line {line}: {key} must be a string, number, boolean or a list of them")
            })?;
            settings.push(Setting {
                section: section.to_string(),
                key: flag_name(key),
                values,
                line,
            });
            Ok(())
        };
        for (name, v) in &table {
            match v {
                toml::Value::Table(t) => {
                    let known = name == "client" || SECTIONS.iter().any(|(s, _)| s == name);
                    if !known {
                        bail!(
                            "{shown} line {}: unknown section [{name}] (sections: {}, client)",
                            section_line(text, name),
                            SECTIONS.map(|s| s.0).join(", ")
                        );
                    }
                    for (k, v) in t {
                        add(name, k, v)?;
                    }
                }
                v => add("", name, v)?,
            }
        }
        let file = File {
            path: path.to_path_buf(),
            settings,
        };
        for s in &file.settings {
            let allowed = keys_of(&s.section, cli);
            if !allowed.contains(&s.key) {
                let section = match s.section.as_str() {
                    "" => "at the top".to_string(),
                    x => format!("in [{x}]"),
                };
                bail!(
                    "{shown} line {}: unknown key {} {section} (known: {})",
                    s.line,
                    s.key,
                    allowed.join(", ")
                );
            }
        }
        Ok(file)
    }
}

/// The keys `section` may set.
fn keys_of(section: &str, cli: &Command) -> Vec<String> {
    match section {
        "" => GLOBAL_KEYS.map(String::from).to_vec(),
        "client" => CLIENT_KEYS.map(String::from).to_vec(),
        s => SECTIONS
            .iter()
            .find(|(name, _)| *name == s)
            .and_then(|(_, path)| leaf(cli, path))
            .map(|c| {
                settable(c)
                    .filter_map(|a| a.get_long().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn section_line(text: &str, name: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim()
                .strip_prefix('[')
                .and_then(|h| h.split(']').next())
                .is_some_and(|h| h.trim() == name)
        })
        .map(|n| n + 1)
        .unwrap_or(0)
}

/// The subcommand at `path` below `cli`.
fn leaf<'a>(cli: &'a Command, path: &[&str]) -> Option<&'a Command> {
    let mut c = cli;
    for p in path {
        c = c.find_subcommand(p)?;
    }
    Some(c)
}

/// The flags of `c` a file or variable may set: long, not help/version.
fn settable(c: &Command) -> impl Iterator<Item = &Arg> {
    c.get_arguments().filter(|a| {
        a.get_long().is_some()
            && !matches!(a.get_action(), ArgAction::Help | ArgAction::Version)
            && a.get_id() != "config"
    })
}

/// Whether `args` (after the program name) give `--long` already.
fn given(args: &[OsString], long: &str, short: Option<char>) -> bool {
    let eq = format!("--{long}=");
    let flag = format!("--{long}");
    let short = short.map(|c| format!("-{c}"));
    args.iter()
        .take_while(|a| *a != "--")
        .filter_map(|a| a.to_str())
        .any(|a| a == flag || a.starts_with(&eq) || short.as_deref() == Some(a))
}

/// The names of the subcommands `args` invoke, in order (`["gateway",
/// "s3"]`): the words that are subcommands of what came before.
pub fn invoked(cli: &Command, args: &[OsString]) -> Vec<String> {
    let mut path = Vec::new();
    let mut c = cli;
    let mut skip_value = false;
    for a in args {
        let Some(a) = a.to_str() else { break };
        if skip_value {
            skip_value = false;
            continue;
        }
        if a == "--" {
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            // A global option with its value in the next word.
            skip_value = !long.contains('=')
                && c.get_arguments()
                    .chain(cli.get_arguments())
                    .any(|x| x.get_long() == Some(long) && x.get_action().takes_values());
            continue;
        }
        if a.starts_with('-') {
            continue;
        }
        match c.find_subcommand(a) {
            Some(sub) => {
                path.push(a.to_string());
                c = sub;
            }
            None => break,
        }
    }
    path
}

/// Flags for `arg` from `values` (a switch: present if true).
fn as_flags(arg: &Arg, values: &[String]) -> Result<Vec<OsString>, String> {
    let long = arg.get_long().expect("settable flags are long");
    if !arg.get_action().takes_values() {
        return match values {
            [v] if matches!(v.as_str(), "true" | "1" | "yes" | "on") => {
                Ok(vec![format!("--{long}").into()])
            }
            [v] if matches!(v.as_str(), "false" | "0" | "no" | "off" | "") => Ok(Vec::new()),
            _ => Err(format!("{long} is a switch: true or false")),
        };
    }
    Ok(values
        .iter()
        .map(|v| OsString::from(format!("--{long}={v}")))
        .collect())
}

/// Where settings came from, for `cairn config check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(usize),
    Env(String),
}

/// Which flag each setting added became, and where it came from.
pub type Sources = Vec<(String, Source)>;

/// `args` (the whole command line) with the settings of `file` and of
/// `CAIRN_*` variables added as flags where the command line gives none;
/// and what each added flag came from.
pub fn expand(
    cli: &Command,
    args: Vec<OsString>,
    file: Option<&File>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<OsString>, Sources)> {
    let (prog, rest) = args
        .split_first()
        .map(|(p, r)| (p.clone(), r.to_vec()))
        .unzip();
    let (prog, rest): (OsString, Vec<OsString>) =
        (prog.unwrap_or_default(), rest.unwrap_or_default());
    let path = invoked(cli, &rest);
    let Some(cmd) = leaf(cli, &path.iter().map(String::as_str).collect::<Vec<_>>()) else {
        return Ok((std::iter::once(prog).chain(rest).collect(), Vec::new()));
    };
    let section = SECTIONS
        .iter()
        .find(|(_, p)| p.iter().copied().eq(path.iter().map(String::as_str)))
        .map(|(s, _)| *s);
    // `[client]` is for what acts as a client: not meta or storage nodes,
    // whose `--meta` is their own section's.
    let client = !matches!(section, Some("server" | "meta" | "storage"));
    let mut added: Vec<OsString> = Vec::new();
    let mut sources = Vec::new();
    let mut add = |arg: &Arg, values: &[String], source: Source| -> Result<()> {
        let flags = as_flags(arg, values).map_err(|e| match &source {
            Source::File(line) => anyhow!(
                "{} line {line}: {e}",
                file.map(|f| f.path.display().to_string())
                    .unwrap_or_default()
            ),
            Source::Env(v) => anyhow!("{v}: {e}"),
        })?;
        sources.push((arg.get_long().unwrap_or_default().to_string(), source));
        added.extend(flags);
        Ok(())
    };
    // The leaf's flags (globals included: clap propagates them) not given.
    let mut args_of: Vec<&Arg> = settable(cmd).collect();
    for a in settable(cli) {
        if !args_of.iter().any(|b| b.get_id() == a.get_id()) {
            args_of.push(a);
        }
    }
    for arg in args_of {
        let long = arg.get_long().expect("settable");
        if given(&rest, long, arg.get_short()) {
            continue;
        }
        // A variable wins over the file. Flags with a variable of their
        // own: clap reads it. Others of a role take CAIRN_<FLAG> (client
        // commands keep theirs to the few they document, `CAIRN_META` and
        // `CAIRN_SECRET_FILE`, which they read themselves; so no stray
        // variable changes an `ls`).
        let declared = arg.get_env().and_then(|e| e.to_str());
        let var = format!("CAIRN_{}", long.replace('-', "_").to_ascii_uppercase());
        if let Some(v) = env(declared.unwrap_or(&var)) {
            if declared.is_none() && section.is_some() {
                add(arg, &[v], Source::Env(var))?;
            }
            continue;
        }
        let Some(f) = file else { continue };
        let from_file = f.settings.iter().find(|s| {
            s.key == long
                && (Some(s.section.as_str()) == section
                    || (s.section.is_empty() && GLOBAL_KEYS.contains(&long))
                    || (s.section == "client" && CLIENT_KEYS.contains(&long) && client))
        });
        if let Some(s) = from_file {
            add(arg, &s.values, Source::File(s.line))?;
        }
    }
    // Before any `--` (what follows it is a command's own arguments).
    let cut = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
    let mut out = vec![prog];
    out.extend_from_slice(&rest[..cut]);
    out.extend(added);
    out.extend_from_slice(&rest[cut..]);
    Ok((out, sources))
}

/// The config file to read: `--config FILE` or `CAIRN_CONFIG` (which must
/// exist), else [`DEFAULT_FILE`] if there is one.
pub fn file_named(args: &[OsString], env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let mut it = args.iter().skip(1).take_while(|a| *a != "--");
    while let Some(a) = it.next() {
        let Some(a) = a.to_str() else { continue };
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
    }
    if let Some(v) = env("CAIRN_CONFIG") {
        return Some(PathBuf::from(v));
    }
    Path::new(DEFAULT_FILE)
        .exists()
        .then(|| PathBuf::from(DEFAULT_FILE))
}

/// `cairn config check`: read the file, check every section's settings
/// as its command would take them, and print the effective settings.
pub fn check(cli: &Command, path: Option<PathBuf>) -> Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    let path = match path {
        Some(p) => p,
        None => match file_named(&std::env::args_os().collect::<Vec<_>>(), &env) {
            Some(p) => p,
            None => bail!("no config file: {DEFAULT_FILE} does not exist and --config names none"),
        },
    };
    let file = File::load(&path, cli)?;
    println!(
        "{}: {} settings, all known",
        path.display(),
        file.settings.len()
    );
    for (section, cmd_path) in SECTIONS {
        if !file.settings.iter().any(|s| s.section == section) {
            continue;
        }
        let mut args: Vec<OsString> = vec!["cairn".into()];
        args.extend(cmd_path.iter().map(OsString::from));
        // Positional arguments a role needs (the mount's directory).
        if section == "mount" {
            args.push("/mnt/cairn".into());
        }
        let (full, sources) = expand(cli, args, Some(&file), &env)?;
        let m = match cli.clone().try_get_matches_from(&full) {
            Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => {
                println!(
                    "[{section}] (still needs on its command line: {})",
                    one_line(&e)
                );
                continue;
            }
            m => m,
        };
        let m = m.map_err(|e| anyhow!("[{section}] {}", blame(&e, &path, &sources)))?;
        println!("[{section}]");
        let mut sub = &m;
        for p in cmd_path {
            sub = sub.subcommand_matches(p).expect("parsed");
        }
        let cmd = leaf(cli, cmd_path).expect("a known command");
        for arg in settable(cmd) {
            let id = arg.get_id().as_str();
            let long = arg.get_long().unwrap_or(id);
            let shown: Vec<String> = match sub.try_get_raw(id) {
                Ok(Some(vals)) => vals.map(|v| v.to_string_lossy().into_owned()).collect(),
                _ => continue,
            };
            let from = match sources.iter().find(|(l, _)| l == long) {
                Some((_, Source::File(line))) => format!("file line {line}"),
                Some((_, Source::Env(v))) => format!("${v}"),
                None => match sub.value_source(id) {
                    Some(clap::parser::ValueSource::EnvVariable) => "environment".into(),
                    Some(clap::parser::ValueSource::DefaultValue) => "default".into(),
                    _ => "command line".into(),
                },
            };
            if shown.is_empty() {
                continue;
            }
            let set = format!("{long} = {}", shown.join(","));
            println!("  {set:<48} # {from}");
        }
    }
    Ok(())
}

/// A clap error in one line, naming the setting it is about when a file
/// or variable gave that flag: `FILE line N (key): invalid value ...`.
pub fn blame(e: &clap::Error, file: &Path, sources: &[(String, Source)]) -> String {
    let bad = e
        .get(clap::error::ContextKind::InvalidArg)
        .map(|v| v.to_string())
        .unwrap_or_default();
    let at = sources
        .iter()
        .find(|(long, _)| bad.starts_with(&format!("--{long} ")) || bad == format!("--{long}"))
        .map(|(long, s)| match s {
            Source::File(line) => format!("{} line {line} ({long}): ", file.display()),
            Source::Env(v) => format!("{v}: "),
        })
        .unwrap_or_default();
    format!("{at}{}", one_line(e))
}

/// A clap error in one line.
fn one_line(e: &clap::Error) -> String {
    e.render()
        .to_string()
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn cli() -> Command {
        crate::Cli::command()
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn strs(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    const TEXT: &str = "tls = \"off\"\n\n[storage]\nmeta = \"m1:7420\"\nzone = \"rack1\"\nscrub_rate = \"8MiB\"\ntier = [\"a=s3://b\", \"c=s3://d\"]\n\n[client]\nsecret-file = \"/etc/cairn/client.key\"\n";

    #[test]
    fn flags_win_over_the_environment_over_the_file() {
        let cli = cli();
        let f = File::parse(Path::new("c.toml"), TEXT, &cli).unwrap();
        let no_env = |_: &str| None;
        let (args, src) = expand(
            &cli,
            os(&["cairn", "storage", "--zone", "rack9", "--secret-file", "s"]),
            Some(&f),
            &no_env,
        )
        .unwrap();
        let args = strs(&args);
        assert!(args.contains(&"--meta=m1:7420".to_string()), "{args:?}");
        assert!(args.contains(&"--scrub-rate=8MiB".to_string()), "{args:?}");
        assert!(
            args.contains(&"--tier=a=s3://b".to_string())
                && args.contains(&"--tier=c=s3://d".to_string())
        );
        assert!(args.contains(&"--tls=off".to_string()), "{args:?}");
        assert!(
            !args.iter().any(|a| a.starts_with("--zone=")),
            "the flag wins: {args:?}"
        );
        assert!(src.contains(&("meta".into(), Source::File(4))), "{src:?}");
        // A variable beats the file; a flag beats both.
        let env = |k: &str| {
            (k == "CAIRN_ZONE" || k == "CAIRN_SCRUB_RATE").then(|| "from-env".to_string())
        };
        let (args, _) = expand(
            &cli,
            os(&["cairn", "storage", "--secret-file", "s"]),
            Some(&f),
            &env,
        )
        .unwrap();
        let args = strs(&args);
        assert!(args.contains(&"--zone=from-env".to_string()), "{args:?}");
        assert!(
            args.contains(&"--scrub-rate=from-env".to_string()),
            "{args:?}"
        );
        // [client] reaches client commands, and not what follows `--`.
        let (args, _) = expand(
            &cli,
            os(&["cairn", "lock", "/l", "--", "ls", "-l"]),
            Some(&f),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            strs(&args),
            [
                "cairn",
                "lock",
                "/l",
                "--secret-file=/etc/cairn/client.key",
                "--tls=off",
                "--",
                "ls",
                "-l"
            ]
        );
        // A client's own variable beats [client] (it reads it itself).
        let env_key = |k: &str| (k == "CAIRN_SECRET_FILE").then(|| "/k".to_string());
        let (args, _) = expand(&cli, os(&["cairn", "ls", "/"]), Some(&f), &env_key).unwrap();
        assert!(
            !strs(&args).iter().any(|a| a.starts_with("--secret-file")),
            "{args:?}"
        );
        // The result parses as the command line it stands for ([client]
        // is not a storage node's: its key is the cluster secret).
        let (args, _) = expand(&cli, os(&["cairn", "storage"]), Some(&f), &no_env).unwrap();
        assert!(!strs(&args).iter().any(|a| a.starts_with("--secret-file")));
        let (args, _) = expand(
            &cli,
            os(&["cairn", "storage", "--secret-file", "s"]),
            Some(&f),
            &no_env,
        )
        .unwrap();
        cli.clone().try_get_matches_from(args).unwrap();
    }

    #[test]
    fn unknown_keys_sections_and_values_are_named_with_their_line() {
        let cli = cli();
        let e = File::parse(
            Path::new("c.toml"),
            "[storage]\nmeta = \"m\"\nzome = \"x\"\n",
            &cli,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("c.toml line 3: unknown key zome in [storage]"),
            "{e}"
        );
        let e = File::parse(Path::new("c.toml"), "\n[stroage]\nzone = \"x\"\n", &cli).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("c.toml line 2: unknown section [stroage]"),
            "{e}"
        );
        let e = File::parse(
            Path::new("c.toml"),
            "[meta]\nrep = 3\nlisten = { a = 1 }\n",
            &cli,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("c.toml line 3: listen must be"),
            "{e}"
        );
        let e = File::parse(Path::new("c.toml"), "[meta\n", &cli).unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let f = File::parse(
            Path::new("c.toml"),
            "[meta]\nno_auto_convert = \"maybe\"\n",
            &cli,
        )
        .unwrap();
        let e = expand(&cli, os(&["cairn", "meta"]), Some(&f), &|_| None).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("c.toml line 2: no-auto-convert is a switch"),
            "{e}"
        );
    }
}
