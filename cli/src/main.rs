//! `fsync`: keep a folder identical on several machines.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cli::home::Home;
use transport::DeviceId;

/// Peer-to-peer folder sync with real merges.
#[derive(Parser)]
#[command(name = "fsync", version, about)]
struct Cli {
    /// The node's home: identity, config, store.
    #[arg(long, global = true, env = "FSYNC_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create this node's identity and config; print its device ID.
    Init,
    /// Print this node's device ID.
    Id,
    /// Shared folders.
    Folder {
        #[command(subcommand)]
        command: FolderCommand,
    },
    /// Trusted devices.
    Peer {
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// The node, its folders and peers (running or not).
    Status {
        /// One JSON object (schema in the docs).
        #[arg(long)]
        json: bool,
    },
    /// The version history of a file.
    Log {
        path: PathBuf,
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// A file's content now, or at a version from `fsync log`.
    Cat {
        path: PathBuf,
        #[arg(long)]
        at: Option<String>,
    },
    /// Run the daemon in the foreground until SIGINT/SIGTERM.
    Run {
        /// UDP address to listen on.
        #[arg(long, default_value = "0.0.0.0:7420")]
        listen: String,
    },
}

#[derive(Subcommand)]
enum FolderCommand {
    /// Share directory PATH under the name FOLDER (created if missing).
    Add { folder: String, path: PathBuf },
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Trust a device for folders, and where to reach it.
    Add {
        device_id: String,
        /// HOST:PORT to dial (repeatable; none: only accepted).
        #[arg(long = "addr")]
        addrs: Vec<String>,
        /// A folder to share with it (repeatable).
        #[arg(long = "folder")]
        folders: Vec<String>,
    },
}

fn run(cli: Cli) -> Result<()> {
    let home = Home::locate(cli.home)?;
    match cli.command {
        Command::Run { listen } => {
            let addr = listen
                .to_socket_addrs()
                .ok()
                .and_then(|mut i| i.next())
                .with_context(|| format!("--listen {listen}: expected HOST:PORT"))?;
            let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
            use std::io::IsTerminal;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .init();
            let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            rt.block_on(cli::daemon::run(&home, addr))?;
        }
        Command::Status { json } => print_bytes(&status(&home, json)?)?,
        Command::Log { path, json } => {
            let out = query(&home, &path, "log", if json { "json" } else { "text" })?;
            print_bytes(&out)?;
            if json {
                println!();
            }
        }
        Command::Cat { path, at } => {
            let out = query(&home, &path, "cat", at.as_deref().unwrap_or(""))?;
            print_bytes(&out)?;
        }
        Command::Init => println!("{}", home.init()?.device_id()),
        Command::Id => println!("{}", home.identity()?.device_id()),
        Command::Folder { command: FolderCommand::Add { folder, path } } => {
            let mut config = home.config()?;
            std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
            let path = path.canonicalize().with_context(|| format!("cannot resolve {}", path.display()))?;
            config.add_folder(&folder, path)?;
            config.save(&home.config_path())?;
        }
        Command::Peer { command: PeerCommand::Add { device_id, addrs, folders } } => {
            let id: DeviceId = device_id.parse().with_context(|| format!("{device_id:?}"))?;
            for a in &addrs {
                if a.to_socket_addrs().map(|mut i| i.next().is_none()).unwrap_or(true) {
                    bail!("--addr {a}: expected HOST:PORT, for example 192.0.2.7:7420");
                }
            }
            let mut config = home.config()?;
            config.add_peer(&id.to_string(), &addrs, &folders)?;
            config.save(&home.config_path())?;
        }
    }
    Ok(())
}

fn print_bytes(b: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(b)?;
    out.flush()?;
    Ok(())
}

/// Sends one request line to the running daemon; `None` when no daemon
/// listens on the home's control socket.
fn ask_daemon(home: &Home, request: &str) -> Result<Option<Vec<u8>>> {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(home.control_path()) else { return Ok(None) };
    s.write_all(request.as_bytes())?;
    s.write_all(b"\n")?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    match reply.split_first() {
        Some((b'0', rest)) => Ok(Some(rest.to_vec())),
        Some((_, rest)) => bail!("{}", String::from_utf8_lossy(rest)),
        None => bail!("the daemon closed the control socket without an answer"),
    }
}

/// Asks the running daemon or, when none runs, reads the store directly.
fn query(home: &Home, path: &std::path::Path, cmd: &str, extra: &str) -> Result<Vec<u8>> {
    let config = home.config()?;
    let cwd = std::env::current_dir().context("no working directory")?;
    let (folder, rel) = cli::query::locate(&config, &cwd, path)?;
    let request = format!("{cmd}\t{folder}\t{rel}\t{extra}");
    if let Some(reply) = ask_daemon(home, &request)? {
        return Ok(reply);
    }
    // No daemon: read the store.
    let identity = home.identity()?;
    let mut store = cli::store::RedbStore::open(&home.store_path())?;
    let agent = cli::daemon::agent_of(identity.device_id());
    let mut f = fsync_core::store::load_folder(agent, &folder, &store)?;
    let devices = cli::query_devices(identity.device_id(), &config);
    let chunks = fsync_core::store::StoreChunks { store: &mut store, error: None };
    cli::answer(&request, |name, run| (name == folder).then(|| run(&mut f, &chunks)), &devices)
}

/// From the running daemon, or from config and store.
fn status(home: &Home, json: bool) -> Result<Vec<u8>> {
    let config = home.config()?;
    if let Some(reply) = ask_daemon(home, &format!("status\t{}", if json { "json" } else { "text" }))? {
        return Ok(reply);
    }
    let identity = home.identity()?;
    let agent = cli::daemon::agent_of(identity.device_id());
    let mut folders = Vec::new();
    if home.store_path().exists() {
        let mut store = cli::store::RedbStore::open(&home.store_path())?;
        for f in &config.folders {
            let mut folder = fsync_core::store::load_folder(agent, &f.name, &store)?;
            let chunks = fsync_core::store::StoreChunks { store: &mut store, error: None };
            folders.push(cli::status::FolderStatus::of(&f.name, &f.path.display().to_string(), &mut folder, &chunks));
        }
    } else {
        for f in &config.folders {
            let mut folder = fsync_core::folder::Folder::new(agent);
            let chunks = fsync_core::chunks::MemoryChunks::default();
            folders.push(cli::status::FolderStatus::of(&f.name, &f.path.display().to_string(), &mut folder, &chunks));
        }
    }
    Ok(cli::status::render(json, &identity.device_id().to_string(), None, &folders, &config, |_| false).into_bytes())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fsync: {e:#}");
            ExitCode::FAILURE
        }
    }
}
