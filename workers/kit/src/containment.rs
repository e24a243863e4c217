//! How document processes start: LibreOffice and its bridge, the page
//! renderers, the repair tools. They parse untrusted files, so each starts
//! through a chain of util-linux tools that exec one another (the process
//! keeps its id) and each take something away:
//!
//! - `unshare --net`: a network namespace of its own, with no interface
//!   but a loopback that is down, so a document can reach nothing, not
//!   even kiln's own ports; as a user without privileges, inside a user
//!   namespace of its own (`--map-root-user`);
//! - `setpriv`: no capabilities (bounding, inheritable and ambient sets
//!   cleared, when kiln runs as root and may clear them), no new privileges
//!   ever, and the parent-death signal, so the kernel kills it when its
//!   worker dies, even by SIGKILL;
//! - `prlimit`: no file larger than 2 GiB (a document cannot fill the disk
//!   with one file), no core dumps, and the caller's limits (memory, CPU),
//!   set before the program starts.
//!
//! What the kernel refuses is probed once at start-up, logged, and left
//! out; it is never a reason not to convert. This module only builds
//! command lines; it starts nothing but its probes.

use std::process::{Command, Stdio};

/// The wrapper every document process starts through, as probed on this
/// machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containment {
    network: Network,
    drop_capabilities: bool,
}

/// How a document process is kept off the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// A network namespace of its own (kiln runs with the privilege).
    Namespace,
    /// A network namespace inside a user namespace of its own.
    UserNamespace,
    /// The host's network: the kernel allows neither.
    Host,
}

impl Containment {
    /// Tries each step on `true` and keeps those that work.
    pub fn probe() -> Self {
        let works = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        let network = if works("unshare", &["--net", "--", "true"]) {
            Network::Namespace
        } else if works("unshare", &["--map-root-user", "--net", "--", "true"]) {
            Network::UserNamespace
        } else {
            tracing::warn!(
                "this kernel gives kiln no network namespace (unshare --net failed): document processes share the host's network"
            );
            Network::Host
        };
        let drop_capabilities = works(
            "setpriv",
            &[
                "--inh-caps=-all",
                "--ambient-caps=-all",
                "--bounding-set=-all",
                "--",
                "true",
            ],
        );
        let containment = Self {
            network,
            drop_capabilities,
        };
        tracing::info!(?containment, "document processes start contained");
        containment
    }

    /// No namespace and no capability drop: for tests of other things and
    /// for machines where the probes cannot run.
    pub fn minimal() -> Self {
        Self {
            network: Network::Host,
            drop_capabilities: false,
        }
    }

    pub fn network(&self) -> Network {
        self.network
    }

    /// The program and arguments that start what follows them contained,
    /// with `limits` (`prlimit` options such as `--as=<bytes>`) besides the
    /// file limits: append the program to run and its arguments.
    pub fn command_line(&self, limits: &[String]) -> Vec<String> {
        let mut line: Vec<String> = Vec::new();
        match self.network {
            Network::Namespace => line.extend(["unshare", "--net", "--"].map(str::to_owned)),
            Network::UserNamespace => {
                line.extend(["unshare", "--map-root-user", "--net", "--"].map(str::to_owned));
            }
            Network::Host => {}
        }
        line.extend(["setpriv", "--pdeathsig", "KILL", "--no-new-privs"].map(str::to_owned));
        if self.drop_capabilities {
            line.extend(["--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"].map(str::to_owned));
        }
        line.push("--".to_owned());
        line.push("prlimit".to_owned());
        line.extend(FILE_LIMITS.map(str::to_owned));
        line.extend(limits.iter().cloned());
        line.push("--".to_owned());
        line
    }
}

/// No file larger than 2 GiB and no core dumps.
const FILE_LIMITS: [&str; 2] = ["--fsize=2147483648", "--core=0"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_line_drops_privileges_then_sets_the_limits() {
        for network in [Network::Namespace, Network::UserNamespace, Network::Host] {
            for drop_capabilities in [true, false] {
                let line = Containment {
                    network,
                    drop_capabilities,
                }
                .command_line(&["--as=1000".to_owned()]);
                let setpriv = line.iter().position(|arg| arg == "setpriv").expect("setpriv");
                assert_eq!(
                    &line[setpriv + 1..setpriv + 4],
                    ["--pdeathsig", "KILL", "--no-new-privs"]
                );
                let prlimit = line.iter().position(|arg| arg == "prlimit").expect("prlimit");
                assert!(prlimit > setpriv, "limits are set inside the namespace, after setpriv");
                assert_eq!(
                    &line[prlimit + 1..],
                    ["--fsize=2147483648", "--core=0", "--as=1000", "--"]
                );
                assert_eq!(line.contains(&"--net".to_owned()), network != Network::Host);
                assert_eq!(line.contains(&"--bounding-set=-all".to_owned()), drop_capabilities);
            }
        }
    }
}
