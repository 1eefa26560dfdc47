//! `fsync`: keep a folder identical on several machines.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use cli::control::Request;
use cli::home::Home;
use transport::DeviceId;

/// Peer-to-peer folder sync with real merges.
#[derive(Parser)]
#[command(name = "fsync", version, about)]
struct Cli {
    /// The node's home: identity, config, store.
    #[arg(long, global = true, env = "FSYNC_HOME")]
    home: Option<PathBuf>,
    /// More log detail (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less log output (-q: warnings and errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    quiet: u8,
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
    /// What a directory of a shared folder holds; with --deleted, the files
    /// deleted there, with their last version and when.
    Ls {
        /// A directory in a shared folder (default: the working directory).
        dir: Option<PathBuf>,
        /// Deleted files instead.
        #[arg(long)]
        deleted: bool,
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Bring back a file or a whole directory (deleted files included) as
    /// it was: before its deletion, at a version from `fsync log`, or before
    /// a time. It is a new change, synced to every peer like an edit.
    Restore {
        path: PathBuf,
        /// A version from `fsync log`.
        #[arg(long, conflicts_with = "before")]
        at: Option<String>,
        /// RFC 3339 (2026-12-05T10:00:00Z) or unix seconds.
        #[arg(long)]
        before: Option<String>,
    },
    /// Let through the deletions the mass-deletion guard holds in FOLDER
    /// (see `fsync status`): they are made here and synced. `fsync
    /// restore` puts them back instead.
    Resume { folder: String },
    /// Run the daemon in the foreground until SIGINT/SIGTERM. With PATH (a
    /// first run): init if needed, share PATH under its base name, print
    /// the `fsync join` line for other machines, then run.
    Run {
        /// A directory to share before running.
        path: Option<PathBuf>,
        /// UDP address to listen on (default: the config's `listen`, else
        /// 0.0.0.0:7420).
        #[arg(long)]
        listen: Option<String>,
        /// TCP address of the HTTP front end (default: the config's `http`,
        /// else 127.0.0.1:7421 or the next free port); `off`: none.
        #[arg(long)]
        http: Option<String>,
    },
    /// Like `run`, and present FOLDER at MOUNTPOINT through FUSE (the
    /// folder's directory is left alone meanwhile) until SIGINT/SIGTERM.
    Mount {
        folder: String,
        mountpoint: PathBuf,
        /// UDP address to listen on (default: the config's `listen`, else
        /// 0.0.0.0:7420).
        #[arg(long, conflicts_with = "at")]
        listen: Option<String>,
        /// TCP address of the HTTP front end (as for `run`).
        #[arg(long, conflicts_with = "at")]
        http: Option<String>,
        /// Show FOLDER read-only as it was at this time (RFC 3339 or unix
        /// seconds), mounted by the running daemon until `umount
        /// MOUNTPOINT`; the command returns once it is mounted.
        #[arg(long)]
        at: Option<String>,
    },
    /// Print a one-line ticket that lets another machine join FOLDER.
    Invite {
        folder: String,
        /// How long the ticket stays valid, e.g. 30m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        expires: String,
        /// HOST:PORT to put in the ticket (repeatable; default: this
        /// machine's address and the listening port).
        #[arg(long = "addr")]
        addrs: Vec<String>,
    },
    /// Print the address of the running daemon's web page, with its access
    /// token, and open it in a browser where there is one.
    Open {
        /// Only print it.
        #[arg(long)]
        print: bool,
    },
    /// Join a folder with a ticket from `fsync invite`, sharing PATH.
    Join { ticket: String, path: PathBuf },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
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
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "fsync", &mut std::io::stdout());
        }
        Command::Run { path, listen, http } => {
            logging(cli.verbose, cli.quiet);
            if let Some(path) = path {
                first_run(&home, &path, listen.as_deref())?;
            }
            daemon(&home, listen, http, None)?;
        }
        Command::Mount { folder, mountpoint, at: Some(at), .. } => {
            let before = cli::query::parse_time(&at)?;
            let mountpoint = std::path::absolute(&mountpoint).with_context(|| format!("{}", mountpoint.display()))?;
            let mountpoint = mountpoint.to_str().with_context(|| format!("{}: not UTF-8", mountpoint.display()))?.to_owned();
            match ask_daemon(&home, &Request::MountAt { folder, mountpoint, before })? {
                Some(out) => print_bytes(&out)?,
                None => bail!("a view of the past is mounted by the running daemon: start it with `fsync run`"),
            }
        }
        Command::Mount { folder, mountpoint, listen, http, at: None } => {
            logging(cli.verbose, cli.quiet);
            daemon(&home, listen, http, Some((folder, mountpoint)))?;
        }
        Command::Open { print } => open(&home, print)?,
        Command::Invite { folder, expires, addrs } => {
            let ttl = parse_duration(&expires)?;
            for a in &addrs {
                resolve(a).with_context(|| format!("--addr {a}: expected HOST:PORT, for example 192.0.2.7:7420"))?;
            }
            println!("{}", invite(&home, &folder, ttl, &addrs)?);
        }
        Command::Join { ticket, path } => {
            let ticket = cli::invite::Ticket::decode(&ticket)?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if ticket.expires <= now {
                bail!("this ticket has expired; ask for a new one (`fsync invite {}`)", ticket.folder);
            }
            let me = home.init()?.device_id();
            if me == ticket.device {
                bail!("this ticket was made by this very node; run `fsync join` on the other machine");
            }
            let mut config = home.config()?;
            let path = shared_dir(&path)?;
            config.add_folder(&ticket.folder, path.clone(), &home.dir)?;
            config.add_peer(&ticket.device.to_string(), &ticket.addrs, std::slice::from_ref(&ticket.folder))?;
            if let Some(p) = config.peers.iter_mut().find(|p| p.id == ticket.device.to_string()) {
                p.join = Some(cli::invite::secret_hex(&ticket.secret));
            }
            config.save(&home.config_path())?;
            let live = ask_daemon(&home, &Request::Reload)?.is_some();
            eprintln!(
                "joined folder {:?} at {}; {}",
                ticket.folder,
                path.display(),
                if live { "the running daemon syncs it now" } else { "start syncing with `fsync run`" }
            );
        }
        Command::Status { json } => print_bytes(&status(&home, json)?)?,
        Command::Log { path, json } => {
            let out = query(&home, &path, |folder, path| Request::Log { folder, path, json })?;
            print_bytes(&out)?;
            if json {
                println!();
            }
        }
        Command::Cat { path, at } => {
            let out = query(&home, &path, |folder, path| Request::Cat { folder, path, at: at.clone() })?;
            print_bytes(&out)?;
        }
        Command::Ls { dir, deleted, json } => {
            let dir = match dir {
                Some(d) => d,
                None => std::env::current_dir().context("no working directory")?,
            };
            let out = query_at(&home, &dir, true, |folder, dir| Request::Ls { folder, dir, deleted, json })?;
            print_bytes(&out)?;
            if json {
                println!();
            }
        }
        Command::Restore { path, at, before } => {
            let before = before.as_deref().map(cli::query::parse_time).transpose()?;
            let config = home.config()?;
            let cwd = std::env::current_dir().context("no working directory")?;
            let (folder, rel) = cli::query::locate_any(&config, &cwd, &path)?;
            let request = Request::Restore { folder, path: rel, at, before };
            match ask_daemon(&home, &request)? {
                Some(out) => print_bytes(&out)?,
                None => bail!("restoring needs the running daemon, which syncs the result: start it with `fsync run`"),
            }
        }
        Command::Resume { folder } => match ask_daemon(&home, &Request::Resume { folder })? {
            Some(out) => print_bytes(&out)?,
            None => bail!("resuming needs the running daemon: start it with `fsync run`"),
        },
        Command::Init => println!("{}", home.init()?.device_id()),
        Command::Id => println!("{}", home.identity()?.device_id()),
        Command::Folder { command: FolderCommand::Add { folder, path } } => {
            let mut config = home.config()?;
            config.add_folder(&folder, shared_dir(&path)?, &home.dir)?;
            config.save(&home.config_path())?;
            ask_daemon(&home, &Request::Reload)?;
        }
        Command::Peer { command: PeerCommand::Add { device_id, addrs, folders } } => {
            let id: DeviceId = device_id.parse().with_context(|| format!("{device_id:?}"))?;
            if id == home.identity()?.device_id() {
                bail!("{id} is this node's own ID: add the other machine's (`fsync id` there)");
            }
            for a in &addrs {
                resolve(a).with_context(|| format!("--addr {a}: expected HOST:PORT, for example 192.0.2.7:7420"))?;
            }
            let mut config = home.config()?;
            config.add_peer(&id.to_string(), &addrs, &folders)?;
            config.save(&home.config_path())?;
            ask_daemon(&home, &Request::Reload)?;
        }
    }
    Ok(())
}

/// Logs to stderr: `RUST_LOG`, else info (`-v` debug, `-vv` trace, `-q` warnings).
fn logging(verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (_, q) if q > 0 => "warn",
        (0, _) => "info",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into());
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Runs the daemon (and the mount) until a signal.
fn daemon(home: &Home, listen: Option<String>, http: Option<String>, mount: Option<(String, PathBuf)>) -> Result<()> {
    let config = home.config()?;
    let listen = listen.or(config.listen).unwrap_or_else(|| cli::config::DEFAULT_LISTEN.to_owned());
    let addr = resolve(&listen).with_context(|| format!("--listen {listen}: expected HOST:PORT"))?;
    let http = http_addr(http.or(config.http))?;
    let rt = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    rt.block_on(cli::daemon::run(home, addr, http, mount))
}

/// Where the HTTP front end listens: none (`off`), the default (another
/// port if taken), or an address the user chose, on loopback only.
fn http_addr(given: Option<String>) -> Result<Option<cli::daemon::HttpAt>> {
    let Some(given) = given else {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], fsync_http::DEFAULT_PORT));
        return Ok(Some(cli::daemon::HttpAt { addr, search: true }));
    };
    if given == "off" {
        return Ok(None);
    }
    let addr = resolve(&given).with_context(|| format!("http address {given:?}: expected HOST:PORT or off"))?;
    if !addr.ip().is_loopback() {
        bail!(
            "http address {addr}: the HTTP front end serves loopback only (it speaks no TLS); \
             put a TLS proxy on this machine in front of 127.0.0.1 to reach it from elsewhere (docs/http.md)"
        );
    }
    Ok(Some(cli::daemon::HttpAt { addr, search: false }))
}

/// `fsync open`: the page's address, with its token.
fn open(home: &Home, print_only: bool) -> Result<()> {
    let Some(reply) = ask_daemon(home, &Request::Status { json: true })? else {
        bail!("no daemon runs on {}: start it with `fsync run`, then `fsync open`", home.dir.display());
    };
    let status: serde_json::Value = serde_json::from_slice(&reply).context("the daemon's status is not JSON")?;
    let Some(at) = status.get("http").and_then(|h| h.as_str()) else {
        bail!("the daemon serves no HTTP (`http = \"off\"` in the config, or `--http off`)");
    };
    let url = format!("http://{at}/?token={}", home.http_token()?);
    println!("{url}");
    let desktop = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if !print_only && desktop {
        // Best effort: without a browser, the printed address is the answer.
        let _ = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    Ok(())
}

fn resolve(addr: &str) -> Result<std::net::SocketAddr> {
    addr.to_socket_addrs().ok().and_then(|mut i| i.next()).context("not a HOST:PORT address")
}

/// Creates (if missing) and resolves a directory to share.
fn shared_dir(path: &std::path::Path) -> Result<PathBuf> {
    if std::fs::metadata(path).is_ok_and(|m| !m.is_dir()) {
        bail!("{} is not a directory: share a directory", path.display());
    }
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    path.canonicalize().with_context(|| format!("cannot resolve {}", path.display()))
}

/// `30s`, `30m`, `24h`, `7d` (or plain seconds).
fn parse_duration(s: &str) -> Result<u64> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().with_context(|| format!("{s:?}: expected a duration such as 30m, 24h or 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => bail!("{s:?}: expected a duration such as 30m, 24h or 7d"),
    };
    if n == 0 {
        bail!("{s:?}: a ticket must stay valid for some time");
    }
    n.checked_mul(mult).with_context(|| format!("{s:?}: longer than this machine can count"))
}

/// A ticket for FOLDER, from the running daemon or written for the next.
fn invite(home: &Home, folder: &str, ttl: u64, addrs: &[String]) -> Result<String> {
    if let Some(t) = ask_daemon(home, &Request::Invite { folder: folder.to_owned(), ttl, addrs: addrs.to_vec() })? {
        return Ok(String::from_utf8_lossy(&t).into_owned());
    }
    let config = home.config()?;
    let listen = config.listen.as_deref().unwrap_or(cli::config::DEFAULT_LISTEN);
    let listen = resolve(listen).with_context(|| format!("listen = {listen:?} in the config"))?;
    let device = home.identity()?.device_id();
    let (_, ticket) = cli::invite::issue(&home.invites_path(), &config, device, folder, ttl, addrs.to_vec(), listen)?;
    Ok(ticket)
}

/// `fsync run PATH`: init, share PATH, print the join line.
fn first_run(home: &Home, path: &std::path::Path, listen: Option<&str>) -> Result<()> {
    if ask_daemon(home, &Request::Status { json: false })?.is_some() {
        bail!("a daemon already runs on {}; share more with `fsync folder add` and `fsync invite`", home.dir.display());
    }
    let id = home.init()?.device_id();
    let mut config = home.config()?;
    let path = shared_dir(path)?;
    let name = match config.folder_at(&path) {
        Some(f) => f.name.clone(),
        None => {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("folder").to_owned();
            config
                .add_folder(&name, path.clone(), &home.dir)
                .with_context(|| format!("cannot share {} as {name:?}", path.display()))?;
            config.save(&home.config_path())?;
            name
        }
    };
    let addrs: Vec<String> = match listen {
        Some(l) => cli::invite::reachable_addrs(resolve(l).with_context(|| format!("--listen {l}: expected HOST:PORT"))?),
        None => Vec::new(),
    };
    let ticket = invite(home, &name, cli::invite::DEFAULT_TTL_SECS, &addrs)?;
    eprintln!("device {id} shares {} as {name:?}", path.display());
    eprintln!("on another machine, run (valid 24 hours, once):");
    println!("fsync join {ticket} ~/{name}");
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
/// runs on the home. A daemon that holds the home's lock but does not
/// listen yet has only just started: wait for its socket a moment.
fn ask_daemon(home: &Home, request: &Request) -> Result<Option<Vec<u8>>> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut s = loop {
        match std::os::unix::net::UnixStream::connect(home.control_path()) {
            Ok(s) => break s,
            Err(_) if !daemon_holds_lock(home) => return Ok(None),
            Err(_) if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => bail!(
                "the daemon on {} holds its home but does not answer on {} ({e}); is it stuck?",
                home.dir.display(),
                home.control_path().display()
            ),
        }
    };
    s.write_all(request.to_line().as_bytes())?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    match reply.split_first() {
        Some((b'0', rest)) => Ok(Some(rest.to_vec())),
        Some((_, rest)) => bail!("{}", String::from_utf8_lossy(rest)),
        None => bail!("the daemon closed the control socket without an answer"),
    }
}

/// The store, to read while no daemon runs; or, when a daemon started
/// after [`ask_daemon`] found none and holds the store now, its answer to
/// `request`.
fn open_store_or_ask(home: &Home, request: &Request) -> Result<Result<fsync_store::RedbStore, Vec<u8>>> {
    match fsync_store::RedbStore::open(&home.store_path()) {
        Ok(store) => Ok(Ok(store)),
        Err(e) if daemon_holds_lock(home) => match ask_daemon(home, request)? {
            Some(reply) => Ok(Err(reply)),
            None => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Whether a daemon runs on the home (it holds `daemon.lock` while it runs).
fn daemon_holds_lock(home: &Home) -> bool {
    std::fs::File::open(home.dir.join("daemon.lock")).is_ok_and(|f| f.try_lock().is_err())
}

/// Asks the running daemon or, when none runs, reads the store directly.
fn query(home: &Home, path: &std::path::Path, request: impl FnOnce(String, String) -> Request) -> Result<Vec<u8>> {
    query_at(home, path, false, request)
}

/// [`query`]; with `root_too`, `path` may be the folder itself (`""`).
fn query_at(
    home: &Home,
    path: &std::path::Path,
    root_too: bool,
    request: impl FnOnce(String, String) -> Request,
) -> Result<Vec<u8>> {
    let config = home.config()?;
    let cwd = std::env::current_dir().context("no working directory")?;
    let (folder, rel) =
        if root_too { cli::query::locate_any(&config, &cwd, path)? } else { cli::query::locate(&config, &cwd, path)? };
    let request = request(folder.clone(), rel);
    if let Some(reply) = ask_daemon(home, &request)? {
        return Ok(reply);
    }
    // No daemon: read the store.
    let identity = home.identity()?;
    let mut store = match open_store_or_ask(home, &request)? {
        Ok(store) => store,
        Err(reply) => return Ok(reply),
    };
    let agent = cli::daemon::agent_of(identity.device_id());
    let mut f = fsync_core::store::load_folder(agent, &folder, &store)?;
    let devices = cli::query_devices(identity.device_id(), &config);
    let chunks = fsync_core::store::StoreChunks { store: &mut store, error: None };
    cli::answer(&request, |name, run| (name == folder).then(|| run(&mut f, &chunks)), &devices, &config)
}

/// From the running daemon, or from config and store.
fn status(home: &Home, json: bool) -> Result<Vec<u8>> {
    let config = home.config()?;
    if let Some(reply) = ask_daemon(home, &Request::Status { json })? {
        return Ok(reply);
    }
    let identity = home.identity()?;
    let me = identity.device_id();
    let agent = cli::daemon::agent_of(me);
    let devices = cli::query_devices(me, &config);
    let mut folders = Vec::new();
    let mut last_seen = Default::default();
    if home.store_path().exists() {
        let mut store = match open_store_or_ask(home, &Request::Status { json })? {
            Ok(store) => store,
            Err(reply) => return Ok(reply),
        };
        last_seen = cli::daemon::load_last_seen(&store);
        for f in &config.folders {
            let mut folder = fsync_core::store::load_folder(agent, &f.name, &store)?;
            folder.set_retention(Some(f.keep_since(cli::daemon::now_ms())));
            let chunks = fsync_core::store::StoreChunks { store: &mut store, error: None };
            folders.push(cli::status::FolderStatus::of(f, &mut folder, &chunks, &devices));
        }
    } else {
        for f in &config.folders {
            let mut folder = fsync_core::folder::Folder::new(agent);
            let chunks = fsync_core::chunks::Chunks::default();
            folders.push(cli::status::FolderStatus::of(f, &mut folder, &chunks, &devices));
        }
    }
    let peers = config
        .peers
        .iter()
        .map(|p| {
            let mut s = cli::status::PeerStatus::of(p, false);
            s.last_seen = last_seen.get(&p.id).copied();
            s
        })
        .collect();
    let status = cli::status::Status {
        device: me.to_string(),
        running: false,
        listen: None,
        http: None,
        folders,
        peers,
        invites: cli::invite::load(&home.invites_path())?.len(),
        store_error: None,
        errors: Vec::new(),
    };
    Ok(status.render(json).into_bytes())
}

fn main() -> ExitCode {
    // A panic is a bug: no state it may have left half changed (a folder's
    // lock held) is used again. The process stops; what was acknowledged
    // is durable, as under SIGKILL, and a restart carries on (docs/design.md,
    // "When something unexpected happens").
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("internal error, stopping (a restart carries on; please report it): {info}");
        default(info);
        std::process::exit(101);
    }));
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fsync: {e:#}");
            ExitCode::FAILURE
        }
    }
}
