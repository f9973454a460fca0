//! Unpacks tars built in memory, evil ones included, for real into temp dirs.
//!
//! Headers are written byte by byte where needed: `tar::Builder` refuses to produce
//! `..` or absolute names, which is exactly what an attacker's tar contains.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use tar::{EntryType, Header};

use super::*;
use crate::digest::sha256_of;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Skips a test that needs root (mknod, chown, trusted xattrs) when not run as root.
macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// A unique name under /tmp that an escaping entry would create.
fn outside_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "kraal-unpack-escape-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

#[derive(Default)]
struct Tar {
    builder: Option<tar::Builder<Vec<u8>>>,
}

impl Tar {
    fn new() -> Self {
        Tar {
            builder: Some(tar::Builder::new(Vec::new())),
        }
    }

    fn b(&mut self) -> &mut tar::Builder<Vec<u8>> {
        self.builder.as_mut().unwrap()
    }

    fn header(path: &str, ty: EntryType, size: u64, mode: u32) -> Header {
        let mut h = Header::new_gnu();
        {
            let gnu = h.as_gnu_mut().unwrap();
            let bytes = path.as_bytes();
            assert!(bytes.len() < gnu.name.len(), "test path too long");
            gnu.name[..bytes.len()].copy_from_slice(bytes);
        }
        h.set_entry_type(ty);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    }

    fn link_header(path: &str, ty: EntryType, target: &str) -> Header {
        let mut h = Self::header(path, ty, 0, 0o777);
        let gnu = h.as_gnu_mut().unwrap();
        let bytes = target.as_bytes();
        gnu.linkname[..bytes.len()].copy_from_slice(bytes);
        h
    }

    fn push(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.b().append(&h, data).unwrap();
        self
    }

    fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.push(Self::header(path, EntryType::Directory, 0, mode), b"")
    }

    fn file(&mut self, path: &str, content: &[u8], mode: u32) -> &mut Self {
        self.push(
            Self::header(path, EntryType::Regular, content.len() as u64, mode),
            content,
        )
    }

    fn file_owned(&mut self, path: &str, content: &[u8], uid: u64, gid: u64) -> &mut Self {
        let mut h = Self::header(path, EntryType::Regular, content.len() as u64, 0o640);
        h.set_uid(uid);
        h.set_gid(gid);
        self.push(h, content)
    }

    fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.push(Self::link_header(path, EntryType::Symlink, target), b"")
    }

    fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.push(Self::link_header(path, EntryType::Link, target), b"")
    }

    fn device(
        &mut self,
        path: &str,
        ty: EntryType,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> &mut Self {
        let mut h = Self::header(path, ty, 0, mode);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, b"")
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.b()
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        self
    }

    fn bytes(&mut self) -> Vec<u8> {
        self.builder.take().unwrap().into_inner().unwrap()
    }
}

/// Unpacks an uncompressed tar into a fresh temp dir.
fn unpack(tar: &[u8]) -> (tempfile::TempDir, Result<String, UnpackError>) {
    let dir = tempfile::tempdir().unwrap();
    let mut reader = tar;
    let result = unpack_layer(&mut reader, Compression::None, dir.path());
    (dir, result)
}

fn expect_refused(result: Result<String, UnpackError>, entry: &str, reason: &str) {
    match result {
        Err(UnpackError::Refused {
            entry: e,
            reason: r,
        }) => {
            assert_eq!(e, entry);
            assert!(r.contains(reason), "reason {r:?} should contain {reason:?}");
        }
        other => panic!("expected refusal of {entry:?} ({reason}), got {other:?}"),
    }
}

fn lget(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    rustix::fs::lgetxattr(path, name, &mut buf[..])
        .ok()
        .map(|n| buf[..n].to_vec())
}

#[test]
fn unpacks_an_ordinary_layer() {
    require_root!();
    let mut t = Tar::new();
    t.dir("./", 0o755)
        .dir("./bin/", 0o755)
        .file("./bin/busybox", b"ELF...", 0o755)
        .hardlink("./bin/sh", "bin/busybox")
        .hardlink("bin/ls", "./bin/busybox")
        .symlink("bin/abs", "/bin/busybox")
        .symlink("bin/rel", "../etc/passwd")
        .file_owned("etc/shadow", b"root:*:", 0, 42)
        .file("usr/bin/su", b"su", 0o4755)
        .dir("tmp", 0o1777)
        .device("dev/null", EntryType::Char, 1, 3, 0o666)
        .device("dev/loop0", EntryType::Block, 7, 0, 0o660)
        .device("run/fifo", EntryType::Fifo, 0, 0, 0o600);
    let tar = t.bytes();
    let (dir, result) = unpack(&tar);
    let root = dir.path();
    assert_eq!(result.unwrap(), sha256_of(&tar));

    assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), b"ELF...");
    let ino = fs::metadata(root.join("bin/busybox")).unwrap().ino();
    assert_eq!(fs::metadata(root.join("bin/sh")).unwrap().ino(), ino);
    assert_eq!(fs::metadata(root.join("bin/ls")).unwrap().ino(), ino);
    assert_eq!(
        fs::read_link(root.join("bin/abs")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        fs::read_link(root.join("bin/rel")).unwrap(),
        Path::new("../etc/passwd")
    );

    let shadow = fs::metadata(root.join("etc/shadow")).unwrap();
    assert_eq!(
        (shadow.uid(), shadow.gid(), shadow.mode() & 0o7777),
        (0, 42, 0o640)
    );
    assert_eq!(shadow.mtime(), 1_600_000_000);
    assert_eq!(
        fs::metadata(root.join("usr/bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    // Implicit parents get 0755.
    assert_eq!(
        fs::metadata(root.join("usr/bin")).unwrap().mode() & 0o7777,
        0o755
    );
    // Directory times survive the entries added to them later.
    assert_eq!(
        fs::metadata(root.join("bin")).unwrap().mtime(),
        1_600_000_000
    );

    let null = fs::metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert!(
        fs::metadata(root.join("dev/loop0"))
            .unwrap()
            .file_type()
            .is_block_device()
    );
    assert!(
        fs::metadata(root.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn owner_of_a_file_with_large_ids() {
    require_root!();
    let mut t = Tar::new();
    t.file_owned("f", b"x", 100_000, 200_000);
    let (dir, result) = unpack(&t.bytes());
    result.unwrap();
    let m = fs::metadata(dir.path().join("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (100_000, 200_000));
}

#[test]
fn root_entry_sets_root_mode() {
    let mut t = Tar::new();
    t.dir("./", 0o750).file("a", b"", 0o644);
    let (dir, result) = unpack(&t.bytes());
    result.unwrap();
    assert_eq!(
        fs::metadata(dir.path()).unwrap().permissions().mode() & 0o7777,
        0o750
    );

    let mut t = Tar::new();
    t.symlink("./", "/etc");
    let (_dir, result) = unpack(&t.bytes());
    expect_refused(result, "./", "layer root must be a directory");
}

#[test]
fn layer_root_defaults_to_0755() {
    let mut t = Tar::new();
    t.file("a", b"", 0o644);
    let (dir, result) = unpack(&t.bytes());
    result.unwrap();
    assert_eq!(
        fs::metadata(dir.path()).unwrap().permissions().mode() & 0o7777,
        0o755
    );
}

#[test]
fn whiteouts_become_overlayfs_form() {
    require_root!();
    let mut t = Tar::new();
    t.dir("etc", 0o755)
        .file("etc/.wh.passwd", b"", 0o644)
        .file(".wh.top", b"", 0o644)
        .file("deep/er/.wh.gone", b"", 0o644)
        .dir("var/cache", 0o755)
        .file("var/cache/.wh..wh..opq", b"", 0o644)
        .file("var/cache/new", b"n", 0o644)
        .file("x/.wh..wh.plnk", b"", 0o644);
    let (dir, result) = unpack(&t.bytes());
    let root = dir.path();
    result.unwrap();
    for whiteout in ["etc/passwd", "top", "deep/er/gone"] {
        let m = fs::symlink_metadata(root.join(whiteout)).unwrap();
        assert!(m.file_type().is_char_device(), "{whiteout}");
        assert_eq!(m.rdev(), 0, "{whiteout}");
        assert_eq!((m.uid(), m.gid()), (0, 0));
    }
    assert!(!root.join("etc/.wh.passwd").exists());
    assert_eq!(
        lget(&root.join("var/cache"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert!(!root.join("var/cache/.wh..wh..opq").exists());
    assert!(root.join("var/cache/new").exists());
    assert!(!root.join("x/.wh..wh.plnk").exists());
    // The opaque xattr is only on the marked directory.
    assert_eq!(lget(&root.join("etc"), "trusted.overlay.opaque"), None);
}

#[test]
fn opaque_marker_creates_its_directory_if_missing() {
    require_root!();
    let mut t = Tar::new();
    t.file("new/dir/.wh..wh..opq", b"", 0o644);
    let (dir, result) = unpack(&t.bytes());
    result.unwrap();
    assert_eq!(
        lget(&dir.path().join("new/dir"), "trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
}

#[test]
fn pax_xattrs_are_applied_but_overlay_ones_ignored() {
    require_root!();
    let mut t = Tar::new();
    t.pax(&[
        ("SCHILY.xattr.user.kraal", b"v1"),
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("mtime", b"1700000000.25"),
    ])
    .file("f", b"x", 0o644);
    let (dir, result) = unpack(&t.bytes());
    result.unwrap();
    let f = dir.path().join("f");
    assert_eq!(lget(&f, "user.kraal"), Some(b"v1".to_vec()));
    assert_eq!(lget(&f, "trusted.overlay.redirect"), None);
    let m = fs::metadata(&f).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 250_000_000));
}

#[test]
fn pax_long_names_work() {
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
    let mut t = Tar::new();
    t.pax(&[("path", long.as_bytes())])
        .file("short", b"content", 0o644);
    let (dir, result) = unpack(&t.bytes());
    result.unwrap();
    assert_eq!(fs::read(dir.path().join(&long)).unwrap(), b"content");
    assert!(!dir.path().join("short").exists());
}

#[test]
fn refuses_dotdot_escape() {
    let name = outside_name("dotdot");
    let entry = format!("../../../../../../../../tmp/{name}");
    let mut t = Tar::new();
    t.file(&entry, b"pwned", 0o644);
    let (_dir, result) = unpack(&t.bytes());
    expect_refused(result, &entry, "'..'");
    assert!(!Path::new("/tmp").join(&name).exists());
}

#[test]
fn refuses_dotdot_even_when_it_stays_inside() {
    let mut t = Tar::new();
    t.dir("a", 0o755).file("a/../b", b"", 0o644);
    let (_dir, result) = unpack(&t.bytes());
    expect_refused(result, "a/../b", "'..'");
}

#[test]
fn refuses_absolute_paths() {
    let name = outside_name("abs");
    let entry = format!("/tmp/{name}");
    let mut t = Tar::new();
    t.file(&entry, b"pwned", 0o644);
    let (_dir, result) = unpack(&t.bytes());
    expect_refused(result, &entry, "absolute");
    assert!(!Path::new(&entry).exists());
}

#[test]
fn refuses_writing_through_a_symlinked_directory() {
    let name = outside_name("symdir");
    let outside = Path::new("/tmp").join(&name);
    fs::create_dir(&outside).unwrap();
    let mut t = Tar::new();
    t.symlink("evil", outside.to_str().unwrap())
        .file("evil/pwned", b"pwned", 0o644);
    let (_dir, result) = unpack(&t.bytes());
    let pwned_exists = outside.join("pwned").exists();
    fs::remove_dir_all(&outside).unwrap();
    expect_refused(result, "evil/pwned", "evil is a symlink");
    assert!(!pwned_exists);
}

#[test]
fn refuses_relative_symlink_escape() {
    let name = outside_name("relsym");
    let mut t = Tar::new();
    t.symlink("up", "../../../../../../../../tmp")
        .file(&format!("up/{name}"), b"pwned", 0o644);
    let (_dir, result) = unpack(&t.bytes());
    expect_refused(result, &format!("up/{name}"), "up is a symlink");
    assert!(!Path::new("/tmp").join(&name).exists());
}

#[test]
fn refuses_directory_entry_through_symlink() {
    let name = outside_name("symdir2");
    let mut t = Tar::new();
    t.symlink("s", "/tmp").dir(&format!("s/{name}"), 0o755);
    let (_dir, result) = unpack(&t.bytes());
    expect_refused(result, &format!("s/{name}"), "s is a symlink");
    assert!(!Path::new("/tmp").join(&name).exists());
}

#[test]
fn refuses_whiteout_through_symlink() {
    let name = outside_name("wh");
    let outside = Path::new("/tmp").join(&name);
    fs::write(&outside, b"keep").unwrap();
    let mut t = Tar::new();
    t.symlink("s", "/tmp")
        .file(&format!("s/.wh.{name}"), b"", 0o644);
    let (_dir, result) = unpack(&t.bytes());
    let still_there = fs::read(&outside).ok();
    fs::remove_file(&outside).unwrap();
    expect_refused(result, &format!("s/.wh.{name}"), "s is a symlink");
    assert_eq!(still_there.as_deref(), Some(&b"keep"[..]));
}

#[test]
fn refuses_opaque_marker_through_symlink() {
    let mut t = Tar::new();
    t.symlink("s", "/tmp").file("s/.wh..wh..opq", b"", 0o644);
    let (_dir, result) = unpack(&t.bytes());
    expect_refused(result, "s/.wh..wh..opq", "s is a symlink");
    assert_eq!(lget(Path::new("/tmp"), "trusted.overlay.opaque"), None);
}

#[test]
fn replaces_a_symlink_instead_of_writing_through_it() {
    let name = outside_name("replace");
    let outside = Path::new("/tmp").join(&name);
    let mut t = Tar::new();
    t.symlink("f", outside.to_str().unwrap())
        .file("f", b"inside", 0o644);
    let (dir, result) = unpack(&t.bytes());
    result.unwrap();
    assert!(!outside.exists());
    let m = fs::symlink_metadata(dir.path().join("f")).unwrap();
    assert!(m.file_type().is_file());
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"inside");
}

#[test]
fn refuses_absolute_hard_link_target() {
    let mut t = Tar::new();
    t.hardlink("h", "/etc/passwd");
    let (dir, result) = unpack(&t.bytes());
    expect_refused(result, "h", "hard link target /etc/passwd: absolute");
    assert!(!dir.path().join("h").exists());
}

#[test]
fn refuses_dotdot_hard_link_target() {
    let mut t = Tar::new();
    t.hardlink("h", "../../../../etc/passwd");
    let (_dir, result) = unpack(&t.bytes());
    expect_refused(result, "h", "'..'");
}

#[test]
fn refuses_hard_link_through_symlink() {
    let mut t = Tar::new();
    t.symlink("s", "/etc").hardlink("h", "s/passwd");
    let (dir, result) = unpack(&t.bytes());
    expect_refused(result, "h", "goes through symlink s");
    assert!(fs::symlink_metadata(dir.path().join("h")).is_err());
}

#[test]
fn hard_link_to_a_symlink_links_the_symlink_itself() {
    let mut t = Tar::new();
    t.symlink("s", "/etc/passwd").hardlink("h", "s");
    let (dir, result) = unpack(&t.bytes());
    result.unwrap();
    let m = fs::symlink_metadata(dir.path().join("h")).unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(
        fs::read_link(dir.path().join("h")).unwrap(),
        Path::new("/etc/passwd")
    );
}

#[test]
fn refuses_hard_link_to_missing_or_self_or_directory() {
    let mut t = Tar::new();
    t.hardlink("h", "missing");
    expect_refused(unpack(&t.bytes()).1, "h", "does not exist");
    let mut t = Tar::new();
    t.file("h", b"x", 0o644).hardlink("./h", "h");
    expect_refused(unpack(&t.bytes()).1, "./h", "itself");
    let mut t = Tar::new();
    t.dir("d", 0o755).hardlink("h", "d");
    expect_refused(unpack(&t.bytes()).1, "h", "is a directory");
}

#[test]
fn refuses_file_under_a_file() {
    let mut t = Tar::new();
    t.file("a", b"x", 0o644).file("a/b", b"y", 0o644);
    expect_refused(unpack(&t.bytes()).1, "a/b", "not a directory");
}

#[test]
fn later_entries_replace_earlier_ones() {
    let mut t = Tar::new();
    t.file("x", b"file", 0o644)
        .dir("x", 0o700)
        .file("x/inner", b"i", 0o644)
        .dir("x", 0o755) // repeated directory: contents stay
        .dir("y", 0o755)
        .file("y/z", b"z", 0o644)
        .file("y", b"now a file", 0o600);
    let (dir, result) = unpack(&t.bytes());
    result.unwrap();
    let root = dir.path();
    assert!(root.join("x").is_dir());
    assert_eq!(fs::metadata(root.join("x")).unwrap().mode() & 0o7777, 0o755);
    assert!(root.join("x/inner").exists());
    assert_eq!(fs::read(root.join("y")).unwrap(), b"now a file");
}

#[test]
fn refuses_bogus_whiteout_names() {
    let mut t = Tar::new();
    t.file("a/.wh..", b"", 0o644);
    expect_refused(unpack(&t.bytes()).1, "a/.wh..", "names no deletable entry");
}

#[test]
fn refuses_unsupported_entry_types() {
    let mut t = Tar::new();
    t.push(Tar::header("vol", EntryType::new(b'V'), 0, 0o644), b"");
    expect_refused(unpack(&t.bytes()).1, "vol", "unsupported tar entry type");
}

#[test]
fn gzip_and_zstd_layers_report_the_uncompressed_digest() {
    let mut t = Tar::new();
    t.file("hello", b"world", 0o644);
    let tar = t.bytes();

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::stream::encode_all(&tar[..], 1).unwrap();

    for (compression, blob) in [(Compression::Gzip, gz), (Compression::Zstd, zst)] {
        let dir = tempfile::tempdir().unwrap();
        let mut reader = &blob[..];
        let diff_id = unpack_layer(&mut reader, compression, dir.path()).unwrap();
        assert_eq!(diff_id, sha256_of(&tar), "{compression:?}");
        assert_eq!(fs::read(dir.path().join("hello")).unwrap(), b"world");
        assert!(
            reader.is_empty(),
            "the compressed stream is read to its end"
        );
    }
}

#[test]
fn corrupt_streams_are_stream_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut garbage = &b"this is not gzip at all"[..];
    let err = unpack_layer(&mut garbage, Compression::Gzip, dir.path()).unwrap_err();
    assert!(matches!(err, UnpackError::Stream(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::DataLoss);

    let mut t = Tar::new();
    t.file("a", b"0123456789", 0o644);
    let tar = t.bytes();
    let truncated = &tar[..512 + 5];
    let dir = tempfile::tempdir().unwrap();
    let mut reader = truncated;
    let err = unpack_layer(&mut reader, Compression::None, dir.path()).unwrap_err();
    assert!(matches!(err, UnpackError::Stream(_)), "{err:?}");
}

#[test]
fn refusal_message_names_entry_and_reason() {
    let mut t = Tar::new();
    t.file("/etc/passwd", b"", 0o644);
    let err = unpack(&t.bytes()).1.unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry \"/etc/passwd\" refused: absolute path (starts with '/')"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}
