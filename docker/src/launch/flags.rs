//! Every `docker run` option, in one table: its long name, its short form,
//! whether it takes a value, and the names docker also accepts for it. The
//! [`Flag`] enum and [`FLAGS`] are generated from that one table, so the
//! parser and the plan match on variants, never on strings.
//!
//! `launch::flags::tests` (and `tests/attack_launch.rs`) compare the table
//! with the installed `docker run --help`: a flag docker gained and this
//! table lacks fails the suite, so it is never passed on unjudged.

/// Whether an option takes a value (`--name VALUE`) or is a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Switch,
    Value,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagSpec {
    pub flag: Flag,
    /// The long name, without `--`.
    pub name: &'static str,
    pub short: Option<char>,
    pub arity: Arity,
    /// Other long names docker accepts for it (deprecated spellings).
    pub aliases: &'static [&'static str],
}

macro_rules! flag_table {
    ($( $variant:ident $name:literal $arity:ident $(short $s:literal)? $(alias $($a:literal),+)? ; )*) => {
        /// A `docker run` option.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Flag { $($variant),* }

        /// The table: one row per [`Flag`], in docker's `--help` order.
        pub const FLAGS: &[FlagSpec] = &[$(
            FlagSpec {
                flag: Flag::$variant,
                name: $name,
                short: flag_table!(@short $($s)?),
                arity: Arity::$arity,
                aliases: &[$($($a),+)?],
            },
        )*];
    };
    (@short) => { None };
    (@short $s:literal) => { Some($s) };
}

flag_table! {
    AddHost "add-host" Value;
    Annotation "annotation" Value;
    Attach "attach" Value short 'a';
    BlkioWeight "blkio-weight" Value;
    BlkioWeightDevice "blkio-weight-device" Value;
    CapAdd "cap-add" Value;
    CapDrop "cap-drop" Value;
    CgroupParent "cgroup-parent" Value;
    Cgroupns "cgroupns" Value;
    Cidfile "cidfile" Value;
    CpuCount "cpu-count" Value;
    CpuPercent "cpu-percent" Value;
    CpuPeriod "cpu-period" Value;
    CpuQuota "cpu-quota" Value;
    CpuRtPeriod "cpu-rt-period" Value;
    CpuRtRuntime "cpu-rt-runtime" Value;
    CpuShares "cpu-shares" Value short 'c';
    Cpus "cpus" Value;
    CpusetCpus "cpuset-cpus" Value;
    CpusetMems "cpuset-mems" Value;
    Detach "detach" Switch short 'd';
    DetachKeys "detach-keys" Value;
    Device "device" Value;
    DeviceCgroupRule "device-cgroup-rule" Value;
    DeviceReadBps "device-read-bps" Value;
    DeviceReadIops "device-read-iops" Value;
    DeviceWriteBps "device-write-bps" Value;
    DeviceWriteIops "device-write-iops" Value;
    DisableContentTrust "disable-content-trust" Switch;
    Dns "dns" Value;
    DnsOption "dns-option" Value alias "dns-opt";
    DnsSearch "dns-search" Value;
    Domainname "domainname" Value;
    Entrypoint "entrypoint" Value;
    Env "env" Value short 'e';
    EnvFile "env-file" Value;
    Expose "expose" Value;
    Gpus "gpus" Value;
    GroupAdd "group-add" Value;
    HealthCmd "health-cmd" Value;
    HealthInterval "health-interval" Value;
    HealthRetries "health-retries" Value;
    HealthStartInterval "health-start-interval" Value;
    HealthStartPeriod "health-start-period" Value;
    HealthTimeout "health-timeout" Value;
    Help "help" Switch;
    Hostname "hostname" Value short 'h';
    Init "init" Switch;
    Interactive "interactive" Switch short 'i';
    IoMaxbandwidth "io-maxbandwidth" Value;
    IoMaxiops "io-maxiops" Value;
    Ip "ip" Value;
    Ip6 "ip6" Value;
    Ipc "ipc" Value;
    Isolation "isolation" Value;
    KernelMemory "kernel-memory" Value;
    Label "label" Value short 'l';
    LabelFile "label-file" Value;
    Link "link" Value;
    LinkLocalIp "link-local-ip" Value;
    LogDriver "log-driver" Value;
    LogOpt "log-opt" Value;
    MacAddress "mac-address" Value;
    Memory "memory" Value short 'm';
    MemoryReservation "memory-reservation" Value;
    MemorySwap "memory-swap" Value;
    MemorySwappiness "memory-swappiness" Value;
    Mount "mount" Value;
    Name "name" Value;
    Network "network" Value alias "net";
    NetworkAlias "network-alias" Value alias "net-alias";
    NoHealthcheck "no-healthcheck" Switch;
    OomKillDisable "oom-kill-disable" Switch;
    OomScoreAdj "oom-score-adj" Value;
    Pid "pid" Value;
    PidsLimit "pids-limit" Value;
    Platform "platform" Value;
    Privileged "privileged" Switch;
    Publish "publish" Value short 'p';
    PublishAll "publish-all" Switch short 'P';
    Pull "pull" Value;
    Quiet "quiet" Switch short 'q';
    ReadOnly "read-only" Switch;
    Restart "restart" Value;
    Rm "rm" Switch;
    Runtime "runtime" Value;
    SecurityOpt "security-opt" Value;
    ShmSize "shm-size" Value;
    SigProxy "sig-proxy" Switch;
    StopSignal "stop-signal" Value;
    StopTimeout "stop-timeout" Value;
    StorageOpt "storage-opt" Value;
    Sysctl "sysctl" Value;
    Tmpfs "tmpfs" Value;
    Tty "tty" Switch short 't';
    Ulimit "ulimit" Value;
    UseApiSocket "use-api-socket" Switch;
    User "user" Value short 'u';
    Userns "userns" Value;
    Uts "uts" Value;
    Volume "volume" Value short 'v';
    VolumeDriver "volume-driver" Value;
    VolumesFrom "volumes-from" Value;
    Workdir "workdir" Value short 'w';
}

impl Flag {
    pub fn spec(self) -> &'static FlagSpec {
        // Generated in variant order, so the discriminant is the row.
        &FLAGS[self as usize]
    }

    /// The long name, without `--`.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn takes_value(self) -> bool {
        self.spec().arity == Arity::Value
    }

    /// The option docker knows by the long name (or alias) `name`.
    pub fn from_long(name: &str) -> Option<Flag> {
        FLAGS
            .iter()
            .find(|f| f.name == name || f.aliases.contains(&name))
            .map(|f| f.flag)
    }

    /// The option docker knows by the short form `c`.
    pub fn from_short(c: char) -> Option<Flag> {
        FLAGS.iter().find(|f| f.short == Some(c)).map(|f| f.flag)
    }
}

/// The options `docker run --help` (its text) lists, as (long name, short
/// form, takes a value): the input of the completeness check.
pub fn from_help(help: &str) -> Vec<(String, Option<char>, bool)> {
    let mut out = Vec::new();
    for line in help.lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        let (short, long) = match first.strip_suffix(',') {
            Some(s) => (
                s.strip_prefix('-').and_then(|s| s.chars().next()),
                words.next(),
            ),
            None => (None, Some(first)),
        };
        let Some(long) = long.and_then(|l| l.strip_prefix("--")) else {
            continue;
        };
        // A value's type follows the name (`list`, `string`, ...); a switch
        // is followed by its description, which starts upper case.
        let takes_value = words
            .next()
            .is_some_and(|w| w.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
        out.push((long.to_string(), short, takes_value));
    }
    out
}

/// How the table disagrees with a `docker run --help` text: every option
/// it lists that the table lacks or describes otherwise.
pub fn disagreements(help: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for (long, short, takes_value) in from_help(help) {
        match Flag::from_long(&long) {
            None => bad.push(format!("--{long} is not in the flag table")),
            Some(f) if f.name() != long => {
                bad.push(format!("--{long} is listed as an alias of --{}", f.name()))
            }
            Some(f) if f.takes_value() != takes_value => bad.push(format!(
                "--{long}: the table says it {} a value, docker says it {}",
                if f.takes_value() { "takes" } else { "takes no" },
                if takes_value { "does" } else { "does not" }
            )),
            Some(f) if f.spec().short != short => bad.push(format!(
                "--{long}: short form {:?} in the table, {short:?} in docker",
                f.spec().short
            )),
            Some(_) => {}
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        for (i, f) in FLAGS.iter().enumerate() {
            assert_eq!(f.flag as usize, i);
            assert_eq!(Flag::from_long(f.name), Some(f.flag));
            for a in f.aliases {
                assert_eq!(Flag::from_long(a), Some(f.flag));
            }
            if let Some(c) = f.short {
                assert_eq!(Flag::from_short(c), Some(f.flag));
            }
        }
        assert_eq!(Flag::from_long("net"), Some(Flag::Network));
        assert_eq!(Flag::from_long("frobnicate"), None);
    }

    #[test]
    fn a_help_text_is_read_and_a_new_flag_is_caught() {
        let help = "Usage:  docker run [OPTIONS] IMAGE [COMMAND] [ARG...]\n\nOptions:\n      --add-host list                    Add a custom host-to-IP mapping\n  -a, --attach list                      Attach to STDIN\n  -d, --detach                           Run container in background\n      --privileged                       Give extended privileges\n      --use-api-socket                   Bind mount Docker API socket\n";
        assert_eq!(
            from_help(help),
            [
                ("add-host".to_string(), None, true),
                ("attach".to_string(), Some('a'), true),
                ("detach".to_string(), Some('d'), false),
                ("privileged".to_string(), None, false),
                ("use-api-socket".to_string(), None, false),
            ]
        );
        assert!(disagreements(help).is_empty());
        let newer = format!("{help}      --escape-hatch string              Something new\n  -x, --privileged                   Changed\n");
        let bad = disagreements(&newer);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("--escape-hatch is not in the flag table"));
    }

    /// The installed docker CLI's options are all in the table, described
    /// the same way: a new flag fails here instead of passing unjudged.
    #[test]
    fn the_table_covers_the_installed_docker_run_help() {
        let out = std::process::Command::new("docker")
            .args(["run", "--help"])
            .output()
            .expect("the docker CLI must be installed to check the flag table against it");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("--volume"),
            "docker run --help printed no options: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bad = disagreements(&help);
        assert!(bad.is_empty(), "the flag table is out of date: {bad:#?}");
    }
}
