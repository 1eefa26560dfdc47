//! A userspace UDP fault proxy (this kernel has no netem qdisc): forwards
//! between one client and one server with seeded loss, delay, jitter (which
//! reorders) and cuts (partitions). Plain threads, no runtime.

use std::collections::BinaryHeap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What a proxy does to packets; changed live by the test.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Chance of dropping a packet (0..1).
    pub loss: f64,
    /// Every packet waits this long...
    pub delay: Duration,
    /// ...plus up to this much more, at random (so packets reorder).
    pub jitter: Duration,
}

struct Queued {
    due: Instant,
    seq: u64,
    to: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    // A max-heap: the earliest due comes out first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

struct Shared {
    faults: Mutex<Faults>,
    cut: AtomicBool,
    stop: AtomicBool,
    queue: Mutex<BinaryHeap<Queued>>,
    wake: Condvar,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// One proxy: clients send to [`Proxy::addr`] instead of `server`.
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(server: SocketAddr, seed: u64) -> Proxy {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind proxy");
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let addr = sock.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            faults: Mutex::new(Faults::default()),
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            queue: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let send_sock = sock.try_clone().expect("clone socket");
        let sh = shared.clone();
        let receiver = std::thread::spawn(move || {
            let mut rng = super::Rng::new(seed);
            let mut client: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65536];
            let mut seq = 0u64;
            while !sh.stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let to = if from == server {
                    match client {
                        Some(c) => c,
                        None => continue,
                    }
                } else {
                    client = Some(from);
                    server
                };
                let f = *sh.faults.lock().expect("faults");
                if sh.cut.load(Ordering::Relaxed) || rng.chance(f.loss) {
                    sh.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                sh.forwarded.fetch_add(1, Ordering::Relaxed);
                if f.delay.is_zero() && f.jitter.is_zero() {
                    let _ = sock.send_to(&buf[..n], to);
                    continue;
                }
                let due = Instant::now() + f.delay + f.jitter.mul_f64(rng.unit());
                seq += 1;
                sh.queue.lock().expect("queue").push(Queued { due, seq, to, bytes: buf[..n].to_vec() });
                sh.wake.notify_one();
            }
        });
        let sh = shared.clone();
        let sender = std::thread::spawn(move || {
            let mut q = sh.queue.lock().expect("queue");
            while !sh.stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                match q.peek().map(|p| p.due) {
                    Some(due) if due <= now => {
                        if let Some(p) = q.pop() {
                            let _ = send_sock.send_to(&p.bytes, p.to);
                        }
                    }
                    Some(due) => q = sh.wake.wait_timeout(q, due - now).expect("queue").0,
                    None => q = sh.wake.wait_timeout(q, Duration::from_millis(50)).expect("queue").0,
                }
            }
        });
        Proxy { addr, shared, threads: vec![receiver, sender] }
    }

    pub fn set_faults(&self, f: Faults) {
        *self.shared.faults.lock().expect("faults") = f;
    }

    /// Cuts (true) or heals (false) the link.
    pub fn cut(&self, on: bool) {
        self.shared.cut.store(on, Ordering::Relaxed);
    }

    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
