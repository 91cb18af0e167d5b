//! The cluster's configuration (CLUSTER.md §14): parsed and checked at start-up, so that a
//! bad cluster setting stops the server before it serves. Nothing acts on it yet: the
//! clustering itself is being built (docs/cluster.md says what exists).
//!
//! Cluster mode is on when a cluster port is set (`--cluster-port`, `TOPGUN_CLUSTER_PORT` or
//! the file's `cluster.port`). Without one, a cluster flag on the command line is an error (the
//! operator meant a cluster), while a cluster variable in the environment, or a `[cluster]`
//! table in the file, is a warning: deployments share environments and files between
//! single nodes and members, and a variable meant for the others must not stop this one.

mod addr;
pub mod keys;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use clap::ArgMatches;
use clap::parser::ValueSource;
use topgun_cluster::ids::MemberName;
use topgun_core::protocol::enums::WriteConcern;

use super::env::{Env, names};
use super::error::ConfigError;
use super::{Cli, KeyRange, out_of_range};
pub use addr::{Discovery, SeedAddr};
use keys::{ClusterFile, Numbers};
pub use keys::{ClusterTiming, NUMERIC_KEYS};

/// The cluster's name when none is configured.
pub const CLUSTER_NAME_DEFAULT: &str = "topgun";
/// The longest cluster name, in bytes: it travels in every handshake.
pub const CLUSTER_NAME_BYTES_MAX: usize = 64;
/// The shortest cluster secret, in bytes: HMAC-SHA256 keys shorter than its output weaken it.
pub const CLUSTER_SECRET_BYTES_MIN: usize = 32;
/// The most members `bootstrap_expect` may wait for: more members than partitions would
/// leave some owning nothing.
pub const BOOTSTRAP_EXPECT_MAX: usize = topgun_core::hash::PARTITION_COUNT as usize;

/// A member's cluster settings. `Debug` shows whether a secret is set, never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Where the cluster listener binds; port 0 picks a free one ([`Self::cluster_addr`]
    /// then takes the port actually bound).
    pub listen: SocketAddr,
    /// Other members to dial, deduplicated, this member's own address left out.
    pub seeds: Vec<SeedAddr>,
    pub discovery: Option<Discovery>,
    /// Members, this one included, that must know each other before the first forms the
    /// cluster (CLUSTER.md §3.3).
    pub bootstrap_expect: usize,
    /// The host peers dial and `PARTITION_MAP` lists: an IP address (IPv6 without brackets)
    /// or a hostname.
    pub advertise_host: String,
    /// `ws://` or `wss://`: what clients are told to connect to, when not the default.
    pub advertise_url: Option<String>,
    /// Replicas besides the owner, 0..=3.
    pub backups: u8,
    /// The write concern a write gets in cluster mode when it asks for none.
    pub write_concern: WriteConcern,
    /// Copies, the owner's included, a `REPLICATED` write waits for; at most `backups` + 1.
    pub min_insync_replicas: u8,
    /// Peers prove they know it; required unless the listener is on loopback.
    pub secret: Option<Vec<u8>>,
    /// Two clusters with different names never merge.
    pub name: String,
    pub timing: ClusterTiming,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("listen", &self.listen)
            .field("seeds", &self.seeds)
            .field("discovery", &self.discovery)
            .field("bootstrap_expect", &self.bootstrap_expect)
            .field("advertise_host", &self.advertise_host)
            .field("advertise_url", &self.advertise_url)
            .field("backups", &self.backups)
            .field("write_concern", &self.write_concern)
            .field("min_insync_replicas", &self.min_insync_replicas)
            .field("secret", &self.secret.as_ref().map_or("none", |_| "set"))
            .field("name", &self.name)
            .field("timing", &self.timing)
            .finish()
    }
}

impl ClusterConfig {
    /// What clients connect to (`endpoints.websocket`): the configured URL, else
    /// `ws://<advertise host>:<port>` with `port` the client listener's bound port.
    pub fn advertise_url(&self, port: u16) -> String {
        self.advertise_url
            .clone()
            .unwrap_or_else(|| format!("ws://{}", addr::host_port(&self.advertise_host, port)))
    }

    /// The HTTP endpoint beside it (`endpoints.http`): `http://<advertise host>:<port>`; with
    /// a configured URL, its scheme's HTTP twin and its authority (a TLS proxy in front of
    /// this member serves both, on the proxy's port).
    pub fn http_url(&self, port: u16) -> String {
        let configured = self.advertise_url.as_deref().and_then(|url| {
            let (scheme, rest) = url.split_once("://")?;
            let authority = rest.split('/').next().unwrap_or(rest);
            let scheme = if scheme == "wss" { "https" } else { "http" };
            Some(format!("{scheme}://{authority}"))
        });
        configured
            .unwrap_or_else(|| format!("http://{}", addr::host_port(&self.advertise_host, port)))
    }

    /// The address peers dial: `<advertise host>:<bound port>`, `bound_port` being the cluster
    /// listener's actual port (it differs from the configured one when that is 0).
    pub fn cluster_addr(&self, bound_port: u16) -> String {
        addr::host_port(&self.advertise_host, bound_port)
    }
}

/// A cluster flag besides `--cluster-port`: its `Cli` id, and how messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Flag {
    pub(super) id: &'static str,
    /// `--flag / ENV_NAME`.
    pub(super) label: &'static str,
}

impl Flag {
    pub(super) fn flag(&self) -> &'static str {
        self.label.split(" / ").next().unwrap_or(self.label)
    }

    pub(super) fn env(&self) -> &'static str {
        self.label.rsplit(" / ").next().unwrap_or(self.label)
    }
}

const CLUSTER_HOST: Flag = flag("cluster_host", "--cluster-host / TOPGUN_CLUSTER_BIND_ADDR");
const SEED_NODES: Flag = flag("seed_nodes", "--seed-nodes / TOPGUN_SEED_NODES");
const DISCOVERY: Flag = flag("discovery", "--discovery / TOPGUN_DISCOVERY");
const BOOTSTRAP_EXPECT: Flag = flag(
    "bootstrap_expect",
    "--bootstrap-expect / TOPGUN_BOOTSTRAP_EXPECT",
);
const ADVERTISE_HOST: Flag = flag("advertise_host", "--advertise-host / TOPGUN_ADVERTISE_HOST");
const ADVERTISE_URL: Flag = flag("advertise_url", "--advertise-url / TOPGUN_ADVERTISE_URL");
const BACKUPS: Flag = flag("backups", "--backups / TOPGUN_BACKUP_COUNT");

const fn flag(id: &'static str, label: &'static str) -> Flag {
    Flag { id, label }
}

/// The cluster flags that mean nothing without cluster mode, in `Cli`'s order.
pub(super) const FLAGS: [Flag; 7] = [
    CLUSTER_HOST,
    SEED_NODES,
    DISCOVERY,
    BOOTSTRAP_EXPECT,
    ADVERTISE_HOST,
    ADVERTISE_URL,
    BACKUPS,
];

/// The cluster flags `cli` holds a value for.
fn given(cli: &Cli) -> impl Iterator<Item = Flag> {
    let set = [
        cli.cluster_host.is_some(),
        cli.seed_nodes.is_some(),
        cli.discovery.is_some(),
        cli.bootstrap_expect.is_some(),
        cli.advertise_host.is_some(),
        cli.advertise_url.is_some(),
        cli.backups.is_some(),
    ];
    FLAGS
        .into_iter()
        .zip(set)
        .filter_map(|(flag, set)| set.then_some(flag))
}

/// The ids of the cluster flags whose value came from the environment rather than the
/// command line (clap does not keep this in the parsed `Cli`).
pub(super) fn env_sourced(matches: &ArgMatches) -> Vec<&'static str> {
    FLAGS
        .iter()
        .filter(|flag| matches.value_source(flag.id) == Some(ValueSource::EnvVariable))
        .map(|flag| flag.id)
        .collect()
}

/// What cluster resolution reads besides the cluster's own settings.
pub(super) struct Inputs<'a> {
    pub(super) cli: &'a Cli,
    pub(super) file: Option<ClusterFile>,
    pub(super) env: &'a Env,
    /// The client listener's address, resolved.
    pub(super) bind: SocketAddr,
    pub(super) node_id: &'a str,
}

/// The cluster settings, or `None` for a single node; warnings for settings a single node
/// ignores are pushed to `warnings`.
pub(super) fn resolve(
    inputs: Inputs<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let file_port = inputs.file.as_ref().and_then(|f| f.port);
    match inputs.cli.cluster_port.or(file_port) {
        Some(port) => clustered(inputs, port).map(Some),
        None => single_node(&inputs, warnings).map(|()| None),
    }
}

/// Refuses cluster flags from the command line; warns of cluster variables and of the
/// file's `[cluster]` table.
fn single_node(inputs: &Inputs<'_>, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let mut unused = Vec::new();
    for flag in given(inputs.cli) {
        if !inputs.cli.env_sourced.contains(&flag.id) {
            return Err(ConfigError::NotClustered { flag: flag.flag() });
        }
        unused.push(flag.env());
    }
    let env = inputs.env;
    let env_only = [
        (
            names::CLUSTER_WRITE_CONCERN,
            env.cluster_write_concern.is_some(),
        ),
        (
            names::MIN_INSYNC_REPLICAS,
            env.min_insync_replicas.is_some(),
        ),
        (names::CLUSTER_SECRET, env.cluster_secret.is_some()),
        (names::CLUSTER_NAME, env.cluster_name.is_some()),
    ];
    unused.extend(
        env_only
            .iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| *name),
    );
    if !unused.is_empty() {
        warnings.push(format!(
            "cluster mode is off (no --cluster-port or TOPGUN_CLUSTER_PORT), so these cluster \
             variables are not used: {}",
            unused.join(", ")
        ));
    }
    if inputs.file.is_some() {
        warnings.push(
            "cluster mode is off (no --cluster-port, TOPGUN_CLUSTER_PORT or cluster.port), so \
             the config file's [cluster] table is not used"
                .to_owned(),
        );
    }
    Ok(())
}

fn clustered(inputs: Inputs<'_>, port: u16) -> Result<ClusterConfig, ConfigError> {
    MemberName::new(inputs.node_id)?;
    let (cli, env) = (inputs.cli, inputs.env);
    let file = &mut inputs.file.unwrap_or_default();
    let listen = SocketAddr::new(
        cli.cluster_host.or(file.host).unwrap_or(inputs.bind.ip()),
        port,
    );
    let advertise_host = advertise_host(cli, file, inputs.bind.ip())?;
    let n = numbers(cli, file, env)?;
    let seeds = seeds(cli, file)?
        .into_iter()
        .filter(|seed| !is_self(seed, listen, &advertise_host))
        .collect::<Vec<_>>();
    let discovery = discovery(cli, file)?;
    Ok(ClusterConfig {
        listen,
        bootstrap_expect: bootstrap_expect(cli, file, seeds.len(), discovery.is_some())?,
        seeds,
        discovery,
        advertise_host,
        advertise_url: advertise_url(cli, file)?,
        backups: n.backups,
        write_concern: write_concern(env)?,
        min_insync_replicas: n.min_insync_replicas,
        secret: secret(env, listen)?,
        name: name(env)?,
        timing: ClusterTiming::new(&n),
    })
}

/// The value of the flag, else of the file's key, with how a message names where it came
/// from.
fn either<'a, T: ?Sized>(
    flag: Option<&'a T>,
    label: Flag,
    file: Option<&'a T>,
    key: &'static str,
) -> Option<(&'a T, &'static str)> {
    flag.map(|v| (v, label.label))
        .or_else(|| file.map(|v| (v, key)))
}

/// `--advertise-host`, else the client bind address if it is a specific one, else loopback.
fn advertise_host(cli: &Cli, file: &ClusterFile, bind: IpAddr) -> Result<String, ConfigError> {
    let given = either(
        cli.advertise_host.as_deref(),
        ADVERTISE_HOST,
        file.advertise_host.as_deref(),
        "cluster.advertise_host",
    );
    let Some((text, field)) = given else {
        let ip = if bind.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            bind
        };
        return Ok(ip.to_string());
    };
    addr::host_of(text).ok_or_else(|| {
        out_of_range(
            field,
            "a hostname or an IP address peers can dial (not 0.0.0.0 or ::)",
            text,
        )
    })
}

fn advertise_url(cli: &Cli, file: &ClusterFile) -> Result<Option<String>, ConfigError> {
    let given = either(
        cli.advertise_url.as_deref(),
        ADVERTISE_URL,
        file.advertise_url.as_deref(),
        "cluster.advertise_url",
    );
    let Some((url, field)) = given else {
        return Ok(None);
    };
    let authority = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .and_then(|rest| rest.split('/').next());
    let ok = authority.is_some_and(|a| !a.is_empty()) && !url.contains(char::is_whitespace);
    if !ok {
        return Err(out_of_range(
            field,
            "a ws:// or wss:// URL with a host",
            url,
        ));
    }
    Ok(Some(url.to_owned()))
}

/// The numeric keys, `--backups` and `TOPGUN_MIN_INSYNC_REPLICAS` winning over the file's.
fn numbers(cli: &Cli, file: &mut ClusterFile, env: &Env) -> Result<Numbers, ConfigError> {
    if let Some(backups) = cli.backups {
        file.backups = Some(checked(&keys::BACKUPS, BACKUPS.label, u64::from(backups))?);
    }
    let mut insync_field = keys::MIN_INSYNC_REPLICAS.key;
    if let Some(text) = &env.min_insync_replicas {
        let value = text
            .trim()
            .parse::<u64>()
            .map_err(|_| ConfigError::BadEnv {
                name: names::MIN_INSYNC_REPLICAS,
                value: text.clone(),
                rule: format!("a count, {}", keys::MIN_INSYNC_REPLICAS.describe()),
            })?;
        let range = &keys::MIN_INSYNC_REPLICAS;
        file.min_insync_replicas = Some(checked(range, names::MIN_INSYNC_REPLICAS, value)?);
        insync_field = names::MIN_INSYNC_REPLICAS;
    }
    let n = Numbers::resolve(file)?;
    keys::check_relations(&n)?;
    let copies = n.backups.saturating_add(1);
    if n.min_insync_replicas > copies {
        let rule = format!("at most the backups + 1 ({copies})");
        return Err(out_of_range(
            insync_field,
            &rule,
            &n.min_insync_replicas.to_string(),
        ));
    }
    Ok(n)
}

/// `value` within `range`, else an error naming `field` (a flag or a variable) and the range.
fn checked(range: &KeyRange, field: &'static str, value: u64) -> Result<u64, ConfigError> {
    range.check(value).map_err(|_| ConfigError::OutOfRange {
        field,
        rule: range.describe(),
        value: value.to_string(),
    })
}

/// `--seed-nodes` (`host:port,…`) or the file's `seed_nodes` list, each entry checked, the
/// repeats dropped.
fn seeds(cli: &Cli, file: &ClusterFile) -> Result<Vec<SeedAddr>, ConfigError> {
    let (entries, field): (Vec<&str>, _) = match (&cli.seed_nodes, &file.seed_nodes) {
        (Some(list), _) => (super::env::list(Some(list)).collect(), SEED_NODES.label),
        (None, Some(list)) => (
            list.iter().map(String::as_str).collect(),
            "cluster.seed_nodes",
        ),
        (None, None) => return Ok(Vec::new()),
    };
    let mut seeds: Vec<SeedAddr> = Vec::with_capacity(entries.len());
    for entry in entries {
        let seed = SeedAddr::parse(entry).ok_or_else(|| {
            out_of_range(
                field,
                "a list of host:port, each port 1..=65535 and IPv6 addresses in brackets \
                 ([::1]:9000)",
                entry,
            )
        })?;
        if !seeds.contains(&seed) {
            seeds.push(seed);
        }
    }
    Ok(seeds)
}

/// Whether `seed` is recognisably this member, so that a list shared by every member can name
/// all of them: same port, and the advertised host, the listener's address, or loopback while
/// the listener takes loopback connections. Other names for this member are found when dialled.
fn is_self(seed: &SeedAddr, listen: SocketAddr, advertise_host: &str) -> bool {
    if listen.port() == 0 || seed.port != listen.port() {
        return false;
    }
    if seed.host == advertise_host {
        return true;
    }
    let local = listen.ip().is_loopback() || listen.ip().is_unspecified();
    match seed.host.parse::<IpAddr>() {
        Ok(ip) => ip == listen.ip() || (ip.is_loopback() && local),
        Err(_) => seed.host == "localhost" && local,
    }
}

fn discovery(cli: &Cli, file: &ClusterFile) -> Result<Option<Discovery>, ConfigError> {
    let given = either(
        cli.discovery.as_deref(),
        DISCOVERY,
        file.discovery.as_deref(),
        "cluster.discovery",
    );
    let Some((text, field)) = given else {
        return Ok(None);
    };
    Discovery::parse(text)
        .map(Some)
        .ok_or_else(|| out_of_range(field, "dns:<name>:<port>, the port 1..=65535", text))
}

/// `--bootstrap-expect`, else 1 + the seeds. With discovery there is no default: the seeds
/// are not known in advance, and 1 would let every member form a cluster of its own.
fn bootstrap_expect(
    cli: &Cli,
    file: &ClusterFile,
    seeds: usize,
    discovery: bool,
) -> Result<usize, ConfigError> {
    let given = either(
        cli.bootstrap_expect.as_ref(),
        BOOTSTRAP_EXPECT,
        file.bootstrap_expect.as_ref(),
        "cluster.bootstrap_expect",
    );
    match given {
        Some((&n, _)) if (1..=BOOTSTRAP_EXPECT_MAX).contains(&n) => Ok(n),
        Some((&n, field)) => Err(out_of_range(
            field,
            &format!("1..={BOOTSTRAP_EXPECT_MAX}"),
            &n.to_string(),
        )),
        None if discovery => Err(out_of_range(
            BOOTSTRAP_EXPECT.label,
            "set with --discovery (the number of members to wait for)",
            "nothing",
        )),
        None => Ok(seeds.saturating_add(1).min(BOOTSTRAP_EXPECT_MAX)),
    }
}

fn write_concern(env: &Env) -> Result<WriteConcern, ConfigError> {
    let Some(text) = &env.cluster_write_concern else {
        return Ok(WriteConcern::Replicated);
    };
    WriteConcern::parse(&text.trim().to_ascii_uppercase()).ok_or_else(|| {
        let known: Vec<&str> = WriteConcern::ALL.iter().map(|c| c.as_str()).collect();
        ConfigError::BadEnv {
            name: names::CLUSTER_WRITE_CONCERN,
            value: text.clone(),
            rule: format!("one of {}", known.join(", ")),
        }
    })
}

/// `TOPGUN_CLUSTER_SECRET`: at least 32 bytes; required unless the listener is on loopback,
/// where only this machine can reach it. Messages give its length, never its bytes.
fn secret(env: &Env, listen: SocketAddr) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(secret) = &env.cluster_secret else {
        if listen.ip().is_loopback() {
            return Ok(None);
        }
        let rule = format!(
            "set (at least {CLUSTER_SECRET_BYTES_MIN} bytes) when the cluster listens off \
             loopback ({listen})"
        );
        return Err(out_of_range(names::CLUSTER_SECRET, &rule, "nothing"));
    };
    let bytes = secret.expose().as_bytes();
    if bytes.len() < CLUSTER_SECRET_BYTES_MIN {
        let rule = format!("at least {CLUSTER_SECRET_BYTES_MIN} bytes");
        let got = format!("{} bytes", bytes.len());
        return Err(out_of_range(names::CLUSTER_SECRET, &rule, &got));
    }
    Ok(Some(bytes.to_vec()))
}

/// `TOPGUN_CLUSTER_NAME`: printable (it is logged and compared byte for byte), at most 64
/// bytes.
fn name(env: &Env) -> Result<String, ConfigError> {
    let Some(name) = &env.cluster_name else {
        return Ok(CLUSTER_NAME_DEFAULT.to_owned());
    };
    let ok = !name.is_empty()
        && name.len() <= CLUSTER_NAME_BYTES_MAX
        && !name.chars().any(char::is_control);
    if !ok {
        return Err(ConfigError::BadEnv {
            name: names::CLUSTER_NAME,
            value: name.clone(),
            rule: format!(
                "a name of 1 to {CLUSTER_NAME_BYTES_MAX} bytes without control characters"
            ),
        });
    }
    Ok(name.clone())
}
