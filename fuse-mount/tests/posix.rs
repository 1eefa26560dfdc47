//! The mount as programs see it: real FUSE mounts (root and /dev/fuse
//! needed; skipped with a message otherwise) over a folder in memory.

#![allow(missing_docs)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fsync_core::chunks::Chunks;
use fsync_core::folder::{Content, Folder, Kind};
use fsync_core::AgentId;
use fuse_mount::{mount, Backend, MountOptions, Mounted};

/// A folder in memory; `persist` counts calls.
#[derive(Clone, Default)]
struct Mem {
    inner: Arc<Mutex<Option<(Folder, Chunks)>>>,
    persisted: Arc<AtomicUsize>,
    changes: Arc<AtomicUsize>,
}

impl Backend for Mem {
    fn with<R>(&self, f: impl FnOnce(&mut Folder, &mut Chunks) -> R) -> Option<R> {
        let mut g = self.inner.lock().expect("lock");
        let (folder, chunks) = g.as_mut()?;
        Some(f(folder, chunks))
    }
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
    }
    fn persist(&self) -> Result<(), String> {
        self.persisted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Fixture {
    mem: Mem,
    mnt: Option<Mounted<Mem>>,
    dir: PathBuf,
    base: PathBuf,
}

impl Fixture {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }
    fn text(&self, path: &str) -> Option<String> {
        self.mem.with(|f, _| {
            let id = f.tree().lookup(path)?.id;
            (f.state(id)?.content == Content::Text).then(|| f.doc(id).map(|d| d.text()))?
        })?
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.mnt.take());
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn can_mount() -> bool {
    let ok = Path::new("/dev/fuse").exists() && std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_ok();
    if !ok {
        eprintln!("skipped: /dev/fuse is not usable here");
    }
    ok
}

fn setup(name: &str) -> Option<Fixture> {
    if !can_mount() {
        return None;
    }
    let base = std::env::temp_dir().join(format!("fsync-fuse-{name}-{}", std::process::id()));
    let _ = Command::new("umount").arg("-l").arg(base.join("mnt")).output();
    let _ = std::fs::remove_dir_all(&base);
    let dir = base.join("mnt");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mem = Mem::default();
    *mem.inner.lock().expect("lock") = Some((Folder::new(AgentId::from_index(1)), Chunks::default()));
    let mnt = mount(mem.clone(), &dir, MountOptions { fsname: "fsync-test".into(), space: base.clone(), read_only: false })
        .expect("mount");
    Some(Fixture { mem, mnt: Some(mnt), dir, base })
}

fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).current_dir(dir).output().expect("sh");
    assert!(out.status.success(), "{script}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn files_directories_and_links_through_std_fs() {
    let Some(fx) = setup("std") else { return };
    std::fs::create_dir(fx.path("docs")).expect("mkdir");
    std::fs::write(fx.path("docs/a.txt"), "hello\n").expect("write");
    assert_eq!(std::fs::read_to_string(fx.path("docs/a.txt")).expect("read"), "hello\n");
    assert_eq!(fx.text("docs/a.txt").as_deref(), Some("hello\n"), "in the model once closed");
    assert!(fx.mem.changes.load(Ordering::SeqCst) > 0);

    // Overwrite, append, truncate.
    std::fs::write(fx.path("docs/a.txt"), "hello world\n").expect("write");
    let mut f = std::fs::OpenOptions::new().append(true).open(fx.path("docs/a.txt")).expect("open");
    std::io::Write::write_all(&mut f, b"more\n").expect("append");
    drop(f);
    assert_eq!(fx.text("docs/a.txt").as_deref(), Some("hello world\nmore\n"));
    let f = std::fs::OpenOptions::new().write(true).open(fx.path("docs/a.txt")).expect("open");
    f.set_len(5).expect("truncate down");
    drop(f);
    assert_eq!(fx.text("docs/a.txt").as_deref(), Some("hello"));

    // Metadata agrees with readdir.
    let names: Vec<String> = std::fs::read_dir(fx.path("docs"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    assert_eq!(names, ["a.txt"]);
    let m = std::fs::metadata(fx.path("docs/a.txt")).expect("stat");
    assert_eq!(m.len(), 5);
    assert_eq!(m.nlink(), 1);
    assert_eq!(std::fs::metadata(fx.path("docs")).expect("stat").nlink(), 2);
    let ino = m.ino();
    std::fs::write(fx.path("docs/a.txt"), "changed").expect("write");
    assert_eq!(std::fs::metadata(fx.path("docs/a.txt")).expect("stat").ino(), ino, "stable inode");

    // chmod: the executable bit is the model's.
    std::fs::set_permissions(fx.path("docs/a.txt"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert!(fx
        .mem
        .with(|f, _| {
            let id = f.tree().lookup("docs/a.txt").expect("there").id;
            f.state(id).expect("state").exec
        })
        .expect("folder"));
    assert_eq!(std::fs::metadata(fx.path("docs/a.txt")).expect("stat").permissions().mode() & 0o777, 0o755);

    // Symlinks are links.
    std::os::unix::fs::symlink("a.txt", fx.path("docs/link")).expect("symlink");
    assert_eq!(std::fs::read_link(fx.path("docs/link")).expect("readlink"), Path::new("a.txt"));
    assert_eq!(std::fs::read_to_string(fx.path("docs/link")).expect("through the link"), "changed");
    assert!(fx.mem.with(|f, _| f.tree().lookup("docs/link").map(|n| n.kind)).flatten() == Some(Kind::Symlink));

    // Rename over an existing file; rmdir refuses a non-empty directory.
    std::fs::write(fx.path("docs/b.txt"), "bee").expect("write");
    std::fs::rename(fx.path("docs/b.txt"), fx.path("docs/a.txt")).expect("rename over");
    assert_eq!(std::fs::read_to_string(fx.path("docs/a.txt")).expect("read"), "bee");
    assert!(!fx.path("docs/b.txt").exists());
    let e = std::fs::remove_dir(fx.path("docs")).expect_err("not empty");
    assert_eq!(e.raw_os_error(), Some(39), "ENOTEMPTY: {e}");
    std::fs::remove_dir_all(fx.path("docs")).expect("rm -r");
    assert!(fx.mem.with(|f, _| f.tree().is_empty()).expect("folder"));

    // Hard links are not supported, with the errno `ln` expects.
    std::fs::write(fx.path("x"), "x").expect("write");
    let e = std::fs::hard_link(fx.path("x"), fx.path("y")).expect_err("no hard links");
    assert_eq!(e.raw_os_error(), Some(1), "EPERM: {e}");
}

#[test]
fn posix_details() {
    let Some(fx) = setup("posix") else { return };
    // Unlinking an open file keeps it readable through the handle.
    std::fs::write(fx.path("open.txt"), "still here").expect("write");
    let mut f = std::fs::File::open(fx.path("open.txt")).expect("open");
    std::fs::remove_file(fx.path("open.txt")).expect("unlink");
    assert!(!fx.path("open.txt").exists());
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s).expect("read after unlink");
    assert_eq!(s, "still here");
    drop(f);
    assert!(fx.mem.with(|f, _| f.tree().lookup("open.txt").is_none()).expect("folder"), "not resurrected");

    // Sparse write and truncate up: zeros, and binary (NUL bytes).
    let f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(fx.path("sparse")).expect("create");
    std::os::unix::fs::FileExt::write_at(&f, b"end", 10).expect("write past the end");
    f.set_len(20).expect("truncate up");
    drop(f);
    let b = std::fs::read(fx.path("sparse")).expect("read");
    assert_eq!(b.len(), 20);
    assert_eq!(&b[..10], &[0u8; 10]);
    assert_eq!(&b[10..13], b"end");
    let binary = fx.mem.with(|f, _| {
        let id = f.tree().lookup("sparse").expect("there").id;
        matches!(f.state(id).expect("state").content, Content::Binary { .. })
    });
    assert_eq!(binary, Some(true));

    // O_APPEND from two handles: nothing overwritten.
    std::fs::write(fx.path("log"), "").expect("create");
    let mut a = std::fs::OpenOptions::new().append(true).open(fx.path("log")).expect("open");
    let mut b = std::fs::OpenOptions::new().append(true).open(fx.path("log")).expect("open");
    std::io::Write::write_all(&mut a, b"one\n").expect("write");
    std::io::Write::write_all(&mut b, b"two\n").expect("write");
    drop((a, b));
    assert_eq!(std::fs::read_to_string(fx.path("log")).expect("read"), "one\ntwo\n");

    // mtime follows writes; utimens sets it; ctime moves on changes.
    let before = std::fs::metadata(fx.path("log")).expect("stat");
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(fx.path("log"), "three\n").expect("write");
    let after = std::fs::metadata(fx.path("log")).expect("stat");
    assert!(after.modified().expect("mtime") > before.modified().expect("mtime"));
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    std::fs::File::options().write(true).open(fx.path("log")).expect("open").set_modified(t).expect("utimens");
    assert_eq!(std::fs::metadata(fx.path("log")).expect("stat").modified().expect("mtime"), t);

    // fsync waits for the store.
    let before = fx.mem.persisted.load(Ordering::SeqCst);
    let mut f = std::fs::OpenOptions::new().write(true).open(fx.path("log")).expect("open");
    std::io::Write::write_all(&mut f, b"durable").expect("write");
    f.sync_all().expect("fsync");
    assert!(fx.mem.persisted.load(Ordering::SeqCst) > before);
    assert_eq!(fx.text("log").as_deref(), Some("durable"), "committed by fsync, before close");
    drop(f);

    // RENAME_NOREPLACE refuses an existing target; RENAME_EXCHANGE is
    // refused cleanly (EINVAL), touching nothing.
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    std::fs::write(fx.path("p"), "p").expect("write");
    std::fs::write(fx.path("q"), "q").expect("write");
    let e = renameat2(AT_FDCWD, &fx.path("p"), AT_FDCWD, &fx.path("q"), RenameFlags::RENAME_NOREPLACE).expect_err("noreplace");
    assert_eq!(e, nix::errno::Errno::EEXIST);
    let e = renameat2(AT_FDCWD, &fx.path("p"), AT_FDCWD, &fx.path("q"), RenameFlags::RENAME_EXCHANGE).expect_err("exchange");
    assert_eq!(e, nix::errno::Errno::EINVAL);
    renameat2(AT_FDCWD, &fx.path("p"), AT_FDCWD, &fx.path("r"), RenameFlags::RENAME_NOREPLACE)
        .expect("noreplace to a free name");
    assert_eq!(std::fs::read_to_string(fx.path("q")).expect("q"), "q");
    assert_eq!(std::fs::read_to_string(fx.path("r")).expect("r"), "p");

    // Renames over the other kind are refused before anything is removed.
    std::fs::create_dir_all(fx.path("full/inner")).expect("mkdir");
    std::fs::create_dir(fx.path("empty")).expect("mkdir");
    let e = std::fs::rename(fx.path("full"), fx.path("q")).expect_err("dir over file");
    assert_eq!(e.raw_os_error(), Some(20), "ENOTDIR: {e}");
    let e = std::fs::rename(fx.path("q"), fx.path("empty")).expect_err("file over dir");
    assert_eq!(e.raw_os_error(), Some(21), "EISDIR: {e}");
    let e = std::fs::rename(fx.path("empty"), fx.path("full")).expect_err("dir over non-empty dir");
    assert_eq!(e.raw_os_error(), Some(39), "ENOTEMPTY: {e}");
    assert_eq!(std::fs::read_to_string(fx.path("q")).expect("q kept"), "q");
    assert!(fx.path("full/inner").is_dir() && fx.path("empty").is_dir(), "nothing removed");
    std::fs::rename(fx.path("full/inner"), fx.path("empty")).expect("dir over empty dir");
    assert!(fx.path("empty").is_dir() && !fx.path("full/inner").exists());

    // statfs answers; names too long are refused.
    sh(&fx.dir, "df . > /dev/null");
    let long = "x".repeat(300);
    let e = std::fs::write(fx.path(&long), "x").expect_err("too long");
    assert_eq!(e.raw_os_error(), Some(36), "ENAMETOOLONG: {e}");
}

#[test]
fn real_programs_inside_the_mount() {
    let Some(fx) = setup("programs") else { return };
    let d = &fx.dir;
    // cp -r, mv, rm -r, ln -s, tar x.
    let src = fx.base.join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).expect("mkdir");
    for i in 0..20 {
        std::fs::write(src.join(format!("sub/f{i}.txt")), format!("file {i}\n")).expect("write");
    }
    std::fs::write(src.join("sub/deeper/bin"), [0u8, 1, 2, 255]).expect("write");
    sh(d, &format!("cp -r {} copy", src.display()));
    assert_eq!(std::fs::read_to_string(d.join("copy/sub/f7.txt")).expect("copied"), "file 7\n");
    assert_eq!(fx.text("copy/sub/f7.txt").as_deref(), Some("file 7\n"));
    sh(d, "mv copy/sub moved && ls moved/deeper/bin && rm -r copy");
    assert!(!d.join("copy").exists());
    assert_eq!(std::fs::read(d.join("moved/deeper/bin")).expect("moved"), [0u8, 1, 2, 255]);
    sh(d, "ln -s moved/f1.txt l && cat l | grep -q 'file 1'");
    sh(
        d,
        &format!(
            "tar -C {} -cf {}/t.tar sub && mkdir untar && tar -C untar -xf {}/t.tar",
            src.display(),
            fx.base.display(),
            fx.base.display()
        ),
    );
    assert_eq!(std::fs::read_to_string(d.join("untar/sub/f19.txt")).expect("untarred"), "file 19\n");

    // Editors: sed -i (temp file + rename), vim (backup dance).
    std::fs::write(d.join("conf"), "port = 1\nname = x\n").expect("write");
    sh(d, "sed -i 's/port = 1/port = 2/' conf");
    assert_eq!(fx.text("conf").as_deref(), Some("port = 2\nname = x\n"));
    if Command::new("vim").arg("--version").output().is_ok() {
        sh(d, "vim -Es -u NONE -c '%s/name = x/name = y/' -c 'wq' conf");
        assert_eq!(fx.text("conf").as_deref(), Some("port = 2\nname = y\n"));
    }

    // git: init, commit on two branches, checkout back and forth.
    if Command::new("git").arg("--version").output().is_ok() {
        sh(
            d,
            "mkdir repo && cd repo && git init -q -b main && git config user.email t@t && git config user.name t \
             && echo one > f && git add f && git commit -qm one \
             && git checkout -qb other && echo two > f && git commit -qam two \
             && git checkout -q main && test \"$(cat f)\" = one \
             && git checkout -q other && test \"$(cat f)\" = two && git fsck --no-progress 2>&1 | (! grep -q error)",
        );
        assert_eq!(fx.text("repo/f").as_deref(), Some("two\n"));
    }
}

/// Delivers the peer's changes to the mounted folder, as the daemon does.
fn from_peer(fx: &Fixture, peer: &Folder) {
    fx.mem.with(|f, _| {
        let (c, _) = peer.changes_since(f.version_vector(), 0, usize::MAX);
        f.apply_changes(&c).1.expect("apply");
    });
    fx.mnt.as_ref().expect("mounted").refresh();
}

/// A peer's replica of the mounted folder: gets what it lacks, edits, and
/// sends its change back the way the daemon applies them.
fn peer_edit(fx: &Fixture, peer: &mut Folder, path: &str, new_text: &str) {
    fx.mem.with(|f, _| {
        let (c, _) = f.changes_since(peer.version_vector(), 0, usize::MAX);
        peer.apply_changes(&c).1.expect("apply");
    });
    let id = peer.tree().lookup(path).expect("peer has it").id;
    peer.set_text(id, new_text, 99).expect("edit");
    from_peer(fx, peer);
}

#[test]
fn remote_changes_show_at_once_and_merge_with_open_writers() {
    let Some(fx) = setup("remote") else { return };
    let mut peer = Folder::new(AgentId::from_index(2));
    std::fs::write(fx.path("note.txt"), "line one\n").expect("write");
    // The kernel caches the size and the page; a longer version from a peer
    // must show in full at once, not cut at the old size for a TTL.
    assert_eq!(std::fs::metadata(fx.path("note.txt")).expect("stat").len(), 9);
    peer_edit(&fx, &mut peer, "note.txt", "line one\nline two from the peer\n");
    let start = std::time::Instant::now();
    loop {
        let now = std::fs::read_to_string(fx.path("note.txt")).expect("read");
        if now == "line one\nline two from the peer\n" {
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_millis(500), "stale for {:?}: {now:?}", start.elapsed());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }

    // A file held open for writing while the peer edits it: both edits.
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(fx.path("note.txt")).expect("open");
    std::os::unix::fs::FileExt::write_at(&f, b"LINE", 0).expect("write at the start");
    peer_edit(&fx, &mut peer, "note.txt", "line one\nline two from the peer\nline three\n");
    std::io::Write::flush(&mut f).expect("flush");
    drop(f);
    let merged = fx.text("note.txt").expect("text");
    assert_eq!(merged, "LINE one\nline two from the peer\nline three\n");
    assert_eq!(std::fs::read_to_string(fx.path("note.txt")).expect("read"), merged);

    // A peer's new file and a peer's rename show up.
    let id = peer.create("from-peer.txt", Kind::File, 100).expect("create");
    peer.set_text(id, "hi", 101).expect("edit");
    from_peer(&fx, &peer);
    assert_eq!(std::fs::read_to_string(fx.path("from-peer.txt")).expect("read"), "hi");
    let id = peer.tree().lookup("note.txt").expect("there").id;
    peer.rename(id, "renamed.txt", 102).expect("rename");
    from_peer(&fx, &peer);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!fx.path("note.txt").exists(), "the old name is gone from the kernel's cache");
    assert_eq!(std::fs::read_to_string(fx.path("renamed.txt")).expect("read"), merged);
}

/// Files too big to be text are chunked after close, off the request
/// thread: readers see the new bytes at once, fsync waits for them, and a
/// newer small version is never overwritten by the older big one.
#[test]
fn big_files_are_chunked_after_close_and_read_back_exactly() {
    let Some(fx) = setup("big") else { return };
    let big: Vec<u8> = (0..6_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(fx.path("big.bin"), &big).expect("write");
    assert_eq!(std::fs::read(fx.path("big.bin")).expect("read at once"), big);
    assert_eq!(std::fs::metadata(fx.path("big.bin")).expect("stat").len(), big.len() as u64);
    let f = std::fs::OpenOptions::new().append(true).open(fx.path("big.bin")).expect("open");
    f.sync_all().expect("fsync waits for the chunks");
    drop(f);
    let size = fx.mem.with(|f, c| {
        let id = f.tree().lookup("big.bin").expect("there").id;
        match &f.state(id).expect("state").content {
            Content::Binary { size, chunks } => {
                assert_eq!(fsync_core::chunks::assemble(chunks, c).expect("all chunks here"), big);
                *size
            }
            other => panic!("not binary: {other:?}"),
        }
    });
    assert_eq!(size, Some(big.len() as u64));

    // Big, then at once small: the small one wins, whenever the big lands.
    for _ in 0..5 {
        std::fs::write(fx.path("flip"), &big).expect("write big");
        std::fs::write(fx.path("flip"), "small now\n").expect("write small");
    }
    fx.mnt.as_ref().expect("mounted").commit_all();
    assert_eq!(fx.text("flip").as_deref(), Some("small now\n"));
    assert_eq!(std::fs::read_to_string(fx.path("flip")).expect("read"), "small now\n");
}

/// pjdfstest's `ftruncate/12.t` (a truncate to 999,999,999,999,999 bytes)
/// once aborted the daemon on a failed allocation and left `Transport
/// endpoint is not connected`; a write at a huge offset did the same. Both
/// are `EFBIG` now, and the mount goes on.
#[test]
fn a_huge_truncate_or_offset_is_efbig_and_the_mount_goes_on() {
    let Some(fx) = setup("huge") else { return };
    let p = fx.path("f.bin");
    std::fs::write(&p, b"data").expect("write");
    let f = std::fs::OpenOptions::new().write(true).open(&p).expect("open");
    let e = f.set_len(999_999_999_999_999).expect_err("a petabyte");
    assert_eq!(e.raw_os_error(), Some(27), "{e}"); // EFBIG
    use std::os::unix::fs::FileExt;
    let e = f.write_at(b"x", 1 << 50).expect_err("a write a petabyte in");
    assert_eq!(e.raw_os_error(), Some(27), "{e}");
    drop(f);
    std::fs::write(fx.path("after.txt"), "still here\n").expect("the mount goes on");
    assert_eq!(std::fs::read(&p).expect("read"), b"data");
}

/// One file operation of [`sequences_of_operations_match_a_plain_directory`].
#[derive(Clone, Debug)]
enum Op {
    Write(&'static str, Vec<u8>),
    WriteAt(&'static str, u64, Vec<u8>),
    Append(&'static str, Vec<u8>),
    Truncate(&'static str, u64),
    Read(&'static str),
    Stat(&'static str),
    List(&'static str),
    Mkdir(&'static str),
    Rmdir(&'static str),
    Unlink(&'static str),
    Rename(&'static str, &'static str),
    Symlink(&'static str, &'static str),
    Chmod(&'static str, bool),
    Open(usize, &'static str),
    HandleWrite(usize, u64, Vec<u8>),
    HandleRead(usize),
    HandleSetLen(usize, u64),
    HandleSync(usize),
    Close(usize),
}

/// A few names, nested, so that operations collide: one name is a file,
/// then a directory, then a link; moves land on what is there.
const NAMES: [&str; 9] = ["a", "b", "d", "d/a", "d/b", "d/e", "d/e/a", "e", "e/a"];
const TARGETS: [&str; 4] = ["a", "../b", "d/a", "nowhere"];
const SLOTS: usize = 3;

fn random_bytes(rng: &mut impl rand::Rng) -> Vec<u8> {
    let len = match rng.random_range(0..10) {
        0 => 0,
        1 => rng.random_range(60_000..200_000),
        _ => rng.random_range(1..3000),
    };
    if rng.random_bool(0.5) {
        // Text: lines of ASCII.
        (0..len).map(|i| if i % 17 == 16 { b'\n' } else { b'a' + (i % 23) as u8 }).collect()
    } else {
        (0..len).map(|_| rng.random::<u8>()).collect()
    }
}

fn random_op(rng: &mut impl rand::Rng) -> Op {
    let name = |rng: &mut dyn rand::RngCore| NAMES[rand::Rng::random_range(rng, 0..NAMES.len())];
    let off = |rng: &mut dyn rand::RngCore| match rand::Rng::random_range(rng, 0..6) {
        0 => rand::Rng::random_range(rng, 100_000..300_000),
        _ => rand::Rng::random_range(rng, 0..5000),
    };
    match rng.random_range(0..22) {
        0..=2 => Op::Write(name(rng), random_bytes(rng)),
        3 => Op::WriteAt(name(rng), off(rng), random_bytes(rng)),
        4 => Op::Append(name(rng), random_bytes(rng)),
        5 => Op::Truncate(name(rng), off(rng)),
        6 => Op::Read(name(rng)),
        7 => Op::Stat(name(rng)),
        8 => Op::List(if rng.random_bool(0.3) { "." } else { name(rng) }),
        9 => Op::Mkdir(name(rng)),
        10 => Op::Rmdir(name(rng)),
        11 => Op::Unlink(name(rng)),
        12 => Op::Rename(name(rng), name(rng)),
        13 => Op::Symlink(TARGETS[rng.random_range(0..TARGETS.len())], name(rng)),
        14 => Op::Chmod(name(rng), rng.random_bool(0.5)),
        15 | 16 => Op::Open(rng.random_range(0..SLOTS), name(rng)),
        17 | 18 => Op::HandleWrite(rng.random_range(0..SLOTS), off(rng), random_bytes(rng)),
        19 => Op::HandleRead(rng.random_range(0..SLOTS)),
        20 => Op::HandleSetLen(rng.random_range(0..SLOTS), off(rng)),
        _ => {
            if rng.random_bool(0.5) {
                Op::HandleSync(rng.random_range(0..SLOTS))
            } else {
                Op::Close(rng.random_range(0..SLOTS))
            }
        }
    }
}

/// What a call gave: a short description of its result, or its errno.
type Outcome = Result<String, i32>;

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn digest(bytes: &[u8]) -> String {
    let sum = bytes.iter().fold(0u64, |h, &b| h.wrapping_mul(1_099_511_628_211).wrapping_add(u64::from(b)));
    format!("{} bytes, {sum:x}", bytes.len())
}

fn describe(m: &std::fs::Metadata, link: Option<PathBuf>) -> String {
    if m.is_dir() {
        "dir".to_owned()
    } else if m.file_type().is_symlink() {
        format!("link to {link:?}")
    } else {
        format!("file of {} bytes, exec {}", m.len(), m.mode() & 0o100 != 0)
    }
}

/// Applies `op` below `root`, with `handles` the open files of this side.
fn apply(root: &Path, op: &Op, handles: &mut [Option<std::fs::File>; SLOTS]) -> Outcome {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::FileExt;
    let p = |n: &str| root.join(n);
    let handle = |handles: &mut [Option<std::fs::File>; SLOTS], i: usize| -> Result<std::fs::File, i32> {
        handles.get(i).and_then(|h| h.as_ref()).ok_or(-9).and_then(|f| f.try_clone().map_err(errno))
    };
    match op {
        Op::Write(n, b) => std::fs::write(p(n), b).map(|()| String::new()).map_err(errno),
        Op::WriteAt(n, off, b) => {
            let f = std::fs::OpenOptions::new().write(true).open(p(n)).map_err(errno)?;
            f.write_all_at(b, *off).map(|()| String::new()).map_err(errno)
        }
        Op::Append(n, b) => {
            let mut f = std::fs::OpenOptions::new().append(true).open(p(n)).map_err(errno)?;
            f.write_all(b).map(|()| String::new()).map_err(errno)
        }
        Op::Truncate(n, len) => {
            let f = std::fs::OpenOptions::new().write(true).open(p(n)).map_err(errno)?;
            f.set_len(*len).map(|()| String::new()).map_err(errno)
        }
        Op::Read(n) => std::fs::read(p(n)).map(|b| digest(&b)).map_err(errno),
        Op::Stat(n) => {
            let m = std::fs::symlink_metadata(p(n)).map_err(errno)?;
            Ok(describe(&m, std::fs::read_link(p(n)).ok()))
        }
        Op::List(n) => {
            let mut names: Vec<String> = std::fs::read_dir(p(n))
                .map_err(errno)?
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()).map_err(errno))
                .collect::<Result<_, _>>()?;
            names.sort();
            Ok(names.join(","))
        }
        Op::Mkdir(n) => std::fs::create_dir(p(n)).map(|()| String::new()).map_err(errno),
        Op::Rmdir(n) => std::fs::remove_dir(p(n)).map(|()| String::new()).map_err(errno),
        Op::Unlink(n) => std::fs::remove_file(p(n)).map(|()| String::new()).map_err(errno),
        Op::Rename(a, b) => std::fs::rename(p(a), p(b)).map(|()| String::new()).map_err(errno),
        Op::Symlink(t, n) => std::os::unix::fs::symlink(t, p(n)).map(|()| String::new()).map_err(errno),
        Op::Chmod(n, exec) => {
            let mode = if *exec { 0o755 } else { 0o644 };
            // Not through a link: a link's target may be outside.
            if std::fs::symlink_metadata(p(n)).map_err(errno)?.file_type().is_symlink() {
                return Ok("a link".into());
            }
            std::fs::set_permissions(p(n), std::fs::Permissions::from_mode(mode)).map(|()| String::new()).map_err(errno)
        }
        Op::Open(i, n) => {
            if std::fs::symlink_metadata(p(n)).is_ok_and(|m| m.file_type().is_symlink()) {
                return Ok("a link".into());
            }
            let f = std::fs::OpenOptions::new().read(true).write(true).open(p(n)).map_err(errno)?;
            if let Some(h) = handles.get_mut(*i) {
                *h = Some(f);
            }
            Ok(String::new())
        }
        Op::HandleWrite(i, off, b) => handle(handles, *i)?.write_all_at(b, *off).map(|()| String::new()).map_err(errno),
        Op::HandleRead(i) => {
            let mut f = handle(handles, *i)?;
            let mut b = Vec::new();
            f.seek(std::io::SeekFrom::Start(0)).map_err(errno)?;
            f.read_to_end(&mut b).map_err(errno)?;
            Ok(digest(&b))
        }
        Op::HandleSetLen(i, len) => handle(handles, *i)?.set_len(*len).map(|()| String::new()).map_err(errno),
        Op::HandleSync(i) => handle(handles, *i)?.sync_all().map(|()| String::new()).map_err(errno),
        Op::Close(i) => {
            if let Some(h) = handles.get_mut(*i) {
                *h = None;
            }
            Ok(String::new())
        }
    }
}

/// Every name below `root`, with what it is and holds.
fn tree(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(&rel)).expect("ls").map(|e| e.expect("entry")).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let r = rel.join(e.file_name());
            let m = std::fs::symlink_metadata(root.join(&r)).expect("stat");
            let mut what = describe(&m, std::fs::read_link(root.join(&r)).ok());
            if m.is_file() {
                what += &format!(", {}", digest(&std::fs::read(root.join(&r)).expect("read")));
            }
            if m.is_dir() {
                todo.push(r.clone());
            }
            out.push((r.to_string_lossy().into_owned(), what));
        }
    }
    out.sort();
    out
}

/// Seeded sequences of file operations (writes at offsets, truncates, moves
/// onto what is there, kinds replaced, links, files kept open across
/// moves and unlinks) done on the mount and on a plain directory side by
/// side: every call has the same outcome (the same errno), and the trees
/// stay the same. `FSYNC_SEED=N` replays one seed.
#[test]
fn sequences_of_operations_match_a_plain_directory() {
    use rand::SeedableRng;
    let Some(fx) = setup("sequences") else { return };
    let seeds: Vec<u64> = match std::env::var("FSYNC_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => (1..=6).collect(),
    };
    for seed in seeds {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let (plain, mounted) = (fx.base.join(format!("plain-{seed}")), fx.path(&format!("s{seed}")));
        std::fs::create_dir_all(&plain).expect("mkdir");
        std::fs::create_dir(&mounted).expect("mkdir in the mount");
        let (mut hp, mut hm): ([Option<std::fs::File>; SLOTS], [Option<std::fs::File>; SLOTS]) = Default::default();
        let mut done = Vec::new();
        for step in 0..300 {
            let op = random_op(&mut rng);
            let (want, got) = (apply(&plain, &op, &mut hp), apply(&mounted, &op, &mut hm));
            done.push(format!("{op:?}").chars().take(100).collect::<String>());
            assert_eq!(
                got,
                want,
                "seed {seed} step {step}, the last operations first: {:#?}",
                done.iter().rev().take(8).collect::<Vec<_>>()
            );
            if step % 20 == 19 {
                assert_eq!(tree(&mounted), tree(&plain), "seed {seed} step {step}");
            }
        }
        drop((hp, hm));
        assert_eq!(tree(&mounted), tree(&plain), "seed {seed} at the end");
    }
}
