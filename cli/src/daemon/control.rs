//! The control socket, and what it asks: status, invitations, config
//! reloads (peers added or joined), history queries.

// The loop's state and imports are this module's too.
use super::*;

/// The control socket (`HOME/control.sock`, owner-only): commands such as
/// `fsync status`, `log`, `cat`, `invite` ask the running daemon, which
/// holds the store. Each connection sends one request line and reads one
/// answer. While the daemon starts (`phase` says what it is doing), a
/// `status` waits a little, then says what the daemon is busy with; other
/// requests wait their turn.
pub(super) fn serve_control(
    home: &Home,
    requests: mpsc::Sender<ControlCall>,
    phase: watch::Receiver<Option<String>>,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let path = home.control_path();
    // We hold the home's lock: a socket file left here is stale.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let requests = requests.clone();
            let mut phase = phase.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut line = String::new();
                let mut r = BufReader::new(r.take(crate::control::MAX_REQUEST));
                if let Err(e) = r.read_line(&mut line).await {
                    let _ = w.write_all(format!("1bad request ({e})").as_bytes()).await;
                    let _ = w.shutdown().await;
                    return;
                }
                let request = match Request::parse(&line) {
                    Ok(request) => request,
                    Err(e) => {
                        let _ = w.write_all(format!("1bad request ({e}): is this fsync of the same version?").as_bytes()).await;
                        let _ = w.shutdown().await;
                        return;
                    }
                };
                if matches!(request, Request::Status { .. }) {
                    let ready = matches!(tokio::time::timeout(STATUS_WAIT, phase.wait_for(Option::is_none)).await, Ok(Ok(_)));
                    if !ready {
                        let doing = phase.borrow().clone().unwrap_or_default();
                        let _ = w
                            .write_all(format!("1the daemon is starting up ({doing}); try again in a moment").as_bytes())
                            .await;
                        let _ = w.shutdown().await;
                        return;
                    }
                }
                let (tx, rx) = oneshot::channel();
                if requests.send((request, tx)).await.is_err() {
                    return;
                }
                let Ok(bytes) = rx.await else { return };
                let _ = w.write_all(&bytes).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(())
}

impl Daemon {
    /// Trusts and dials what `config` lists; reconnects peers whose shared
    /// folders changed, so their connection offers the new set.
    pub(super) fn apply_peers(&mut self, config: &Config) {
        for p in &config.peers {
            let Ok(id) = p.id.parse::<DeviceId>() else {
                tracing::error!("peer {} in the config is not a device ID; ignored", p.id);
                continue;
            };
            let before = self.trust.folders_of(&id);
            for f in &p.folders {
                self.trust.allow(id, f);
            }
            if let Some(secret) = p.join.as_deref().and_then(crate::invite::parse_secret) {
                self.trust.set_join_secret(id, secret);
            }
            if before != self.trust.folders_of(&id) && !before.is_empty() {
                self.node.disconnect(id);
            }
            for a in &p.addrs {
                match a.to_socket_addrs().ok().and_then(|mut i| i.next()) {
                    Some(addr) => {
                        if self.dialled.insert((addr, id)) {
                            self.node.dial(addr, id);
                        }
                    }
                    None => tracing::warn!("cannot resolve {a} for peer {}", id.short()),
                }
            }
        }
    }
}

impl Daemon {
    /// Re-reads the config: new folders start syncing, new peers are
    /// trusted and dialled.
    pub(super) fn reload(&mut self) -> Result<()> {
        let config = self.home.config()?;
        for fc in &config.folders {
            if let Some(l) = self.locals.iter_mut().find(|l| l.name == fc.name) {
                l.index.guard = fc.guard();
                continue;
            }
            let i = self.locals.len();
            let local = tokio::task::block_in_place(|| open_folder(fc, i, &mut self.store, self.agent, &self.events, false))?;
            self.locals.push(local);
            self.node.add_folder(&fc.name, FolderPort::new(self.from_peers.clone(), i));
            self.persist(i);
            tracing::info!(folder = %fc.name, path = %fc.path.display(), "now sharing");
            // Connections offer folders when they open: reconnect the
            // peers trusted for this one.
            for p in config.peers.iter().filter(|p| p.folders.contains(&fc.name)) {
                if let Ok(id) = p.id.parse() {
                    self.node.disconnect(id);
                }
            }
        }
        self.apply_peers(&config);
        self.config = config;
        Ok(())
    }
}

impl Daemon {
    /// A device redeemed one of our invitations: it becomes a peer as if
    /// `fsync peer add` had been run for it.
    pub(super) fn joined(&mut self, j: Joined) {
        let r = (|| -> Result<()> {
            let mut config = self.home.config()?;
            config.add_peer(&j.device.to_string(), &[j.addr.to_string()], std::slice::from_ref(&j.folder))?;
            config.save(&self.home.config_path())?;
            crate::invite::remove(&self.home.invites_path(), &j.secret)?;
            self.apply_peers(&config);
            self.config = config;
            Ok(())
        })();
        match r {
            Ok(()) => {
                tracing::info!(peer = %j.device, folder = %j.folder, addr = %j.addr, "new peer saved to the config")
            }
            Err(e) => self.fail("cannot save the peer that joined", &e),
        }
    }
}

impl Daemon {
    /// Answers a control request.
    pub(super) fn control(&mut self, request: &Request) -> Result<Vec<u8>> {
        match request {
            Request::Status { json } => Ok(self.status(*json).into_bytes()),
            Request::Reload => {
                self.reload()?;
                Ok(Vec::new())
            }
            Request::Invite { folder, ttl, addrs } => Ok(self.invite(folder, *ttl, addrs.clone())?.into_bytes()),
            Request::Log { .. } | Request::Cat { .. } | Request::Ls { .. } => {
                let devices = crate::query_devices(self.me, &self.config);
                crate::answer(request, |folder, f| self.read(folder, |s| f(&mut s.folder, &s.chunks)), &devices, &self.config)
            }
            Request::Restore { folder, path, at, before } => self.restore(folder, path, at.as_deref(), *before),
            Request::Resume { folder } => self.resume(folder),
            Request::MountAt { folder, mountpoint, before } => self.mount_past(folder, mountpoint, *before),
        }
    }
}

impl Daemon {
    /// Opens an invitation and returns its ticket.
    pub(super) fn invite(&mut self, folder: &str, ttl: u64, addrs: Vec<String>) -> Result<String> {
        let (invite, ticket) = crate::invite::issue(
            &self.home.invites_path(),
            &self.config,
            self.me,
            folder,
            ttl,
            addrs,
            self.node.local_addr()?,
        )?;
        self.trust.invite(invite);
        Ok(ticket)
    }
}

impl Daemon {
    pub(super) fn status(&self, json: bool) -> String {
        let devices = crate::query_devices(self.me, &self.config);
        let folders = self
            .config
            .folders
            .iter()
            .filter_map(|f| {
                let problems = self.locals.iter().find(|l| l.name == f.name).map(Local::problems).unwrap_or_default();
                self.read(&f.name, |s| {
                    let mut st = crate::status::FolderStatus::of(f, &mut s.folder, &s.chunks, &devices);
                    st.problems = problems;
                    st
                })
            })
            .collect();
        let connected = self.node.connected_peers();
        let info = self.node.peer_info();
        let saved = load_last_seen(&self.store);
        let peers = self
            .config
            .peers
            .iter()
            .map(|p| {
                let id = p.id.parse::<DeviceId>().ok();
                let i = id.and_then(|id| info.get(&id));
                let is_connected = id.is_some_and(|id| connected.contains(&id));
                let mut s = crate::status::PeerStatus::of(p, is_connected);
                s.last_seen = i.map(|i| i.last_seen).or_else(|| saved.get(&p.id).copied());
                if let Some(i) = i {
                    s.address = i.addr.map(|a| a.to_string());
                }
                if let Some(i) = i.filter(|_| is_connected) {
                    s.to_send = i.folders.values().map(|f| f.to_send).sum();
                    s.to_fetch = i.folders.values().map(|f| f.to_fetch).sum();
                }
                s
            })
            .collect();
        let status = Status {
            device: self.me.to_string(),
            running: true,
            listen: self.node.local_addr().ok().map(|a| a.to_string()),
            http: self.http.map(|a| a.to_string()),
            folders,
            peers,
            invites: self.trust.open_invites(),
            store_error: self.store_error.clone(),
            errors: self.errors.iter().cloned().collect(),
        };
        status.render(json)
    }
}

impl Daemon {
    /// Progress of long work (a bar on a terminal, else a log line every
    /// few seconds); and peers' last-seen times, saved for `fsync status`
    /// offline.
    pub(super) fn report(&mut self) {
        let info = self.node.peer_info();
        let connected = self.node.connected_peers();
        // The transport's own counts, per connected peer: cheap, and the
        // same numbers `status` shows per peer.
        let live = info.iter().filter(|(id, _)| connected.contains(id)).flat_map(|(_, i)| i.folders.values());
        let (to_send, to_fetch) = live.fold((0u64, 0usize), |(s, f), p| (s + p.to_send.unwrap_or(0), f + p.to_fetch));
        self.progress.update(to_send, to_fetch as u64);
        if self.last_seen_saved.elapsed() >= Duration::from_secs(5) {
            self.save_last_seen();
            self.last_seen_saved = Instant::now();
        }
    }
}
