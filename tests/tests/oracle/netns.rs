//! Network faults in the kernel: one network namespace per node, all
//! joined by veth pairs to a bridge in a switch namespace, and nftables
//! rules in each node's namespace for packet loss and partitions (this
//! kernel has no `netem`; delay and reordering come from the userspace
//! proxy instead). Needs root, `ip` (iproute2) and `nft` (nftables).
//! Everything is removed again on drop.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The port every node listens on (each has its own network).
pub const PORT: u16 = 7000;

pub struct Netns {
    tag: String,
    n: usize,
    /// Drops counted by rules since replaced.
    flushed: std::cell::Cell<u64>,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Netns {
    /// `n` node namespaces on one switch, or why that cannot be done here.
    pub fn new(n: usize) -> Result<Netns, String> {
        let tag = format!("fsy{}", std::process::id() % 100_000);
        let net = Netns { tag, n, flushed: std::cell::Cell::new(0) };
        let sw = net.switch();
        run(&["ip", "netns", "add", &sw])?;
        run(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &sw, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = net.ns(i);
            let port = format!("p{i}");
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &sw])?;
            run(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{}/24", net.addr(i)), "dev", "eth0"])?;
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            // `cut` drops what comes from the other side of a partition,
            // `loss` a share of everything else.
            net.nft(i, "table inet fsync {\n chain cut {}\n chain loss {}\n chain input { type filter hook input priority 0; policy accept; iifname \"eth0\" jump cut; iifname \"eth0\" jump loss; }\n}\n")?;
        }
        Ok(net)
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.tag)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.tag)
    }

    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, 0, i as u8 + 1)
    }

    /// Runs an nftables script in node `i`'s namespace.
    fn nft(&self, i: usize, script: &str) -> Result<(), String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        child.stdin.take().ok_or("nft stdin")?.write_all(script.as_bytes()).map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("nft: {}\n{script}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    /// Drops `percent` of the packets each node receives.
    pub fn set_loss(&self, percent: u32) {
        self.flushed.set(self.dropped());
        for i in 0..self.n {
            let rule = if percent > 0 {
                format!("add rule inet fsync loss numgen random mod 100 < {percent} counter drop\n")
            } else {
                String::new()
            };
            self.nft(i, &format!("flush chain inet fsync loss\n{rule}")).expect("nft loss");
        }
    }

    /// Each node drops everything from the nodes in `away[i]`.
    fn cut(&self, away: impl Fn(usize) -> Vec<usize>) {
        self.flushed.set(self.dropped());
        for i in 0..self.n {
            let from: Vec<String> = away(i).into_iter().map(|j| self.addr(j).to_string()).collect();
            let rule = if from.is_empty() {
                String::new()
            } else {
                format!("add rule inet fsync cut ip saddr {{ {} }} counter drop\n", from.join(", "))
            };
            self.nft(i, &format!("flush chain inet fsync cut\n{rule}")).expect("nft cut");
        }
    }

    /// Cuts every link between `side` and the rest (empty: heals).
    pub fn partition(&self, side: &[usize]) {
        self.cut(|i| (0..self.n).filter(|&j| side.contains(&i) != side.contains(&j)).collect());
    }

    /// Cuts (or heals) every link of node `x`.
    pub fn isolate(&self, x: usize, on: bool) {
        self.cut(|i| {
            if !on {
                vec![]
            } else if i == x {
                (0..self.n).filter(|&j| j != x).collect()
            } else {
                vec![x]
            }
        });
    }

    /// Packets dropped so far (loss and cuts).
    pub fn dropped(&self) -> u64 {
        self.flushed.get()
            + (0..self.n)
                .map(|i| {
                    let out = Command::new("ip")
                        .args(["netns", "exec", &self.ns(i), "nft", "list", "table", "inet", "fsync"])
                        .output();
                    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
                    text.split("counter packets ")
                        .skip(1)
                        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                        .sum::<u64>()
                })
                .sum::<u64>()
    }

    /// The command prefix that runs a program in node `i`'s namespace.
    pub fn exec(&self, i: usize) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i)]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for i in 0..self.n {
            let _ = run(&["ip", "netns", "del", &self.ns(i)]);
        }
        let _ = run(&["ip", "netns", "del", &self.switch()]);
    }
}
