//! POSIX ACLs of sandbox identities, written straight to the `system.posix_acl_access` and
//! `system.posix_acl_default` xattrs (no libacl needed at build or run time).
//!
//! - [`grant_only`]: a sandbox directory is owned by the sandbox identity, mode 0700, with access
//!   and default ACLs granting rwx to that identity and to the platform's admin group, nobody
//!   else. (The group bits of the mode then show the ACL mask, `rwx`, as POSIX requires; the
//!   owning group itself gets `---`.)
//! - [`locate`]: where a deny path (as the sandbox sees it) is inside a root, without following
//!   a symlink in its last component; [`deny`]: a `user:<uid>:---` entry on that file, so the
//!   identity can neither read nor execute it whatever the mode says.
//! - [`remove_user`]: takes out the entries of one uid and leaves every other entry alone.
//!
//! The mask is kept as it is where it can be: adding an entry widens it by that entry's
//! permissions only (nothing for a deny), removing one never changes it, and it is dropped only
//! when no named entry is left and dropping it changes no one's permissions. Where the mask is the
//! union of the group-class entries (what `setfacl` maintains) this is exactly what `setfacl -m`
//! and `setfacl -x` write; where an administrator narrowed it (`chmod g-w` on a file with an ACL),
//! paddock does not widen it again the way `setfacl`'s recalculation would.
//!
//! ```no_run
//! use paddock_runtime::acl;
//! use std::path::Path;
//!
//! acl::grant_only(Path::new("/var/lib/paddock/sandboxes/web-0/data"), 2010000000, 2010000000, Some(2000))?;
//! if let acl::Located::File { path, .. } = acl::locate(Path::new("/srv/rootfs"), Path::new("/usr/bin/su"))? {
//!     acl::deny(&path, 2010000000)?;
//! }
//! # Ok::<(), acl::AclError>(())
//! ```

use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

pub const XATTR_ACCESS: &str = "system.posix_acl_access";
pub const XATTR_DEFAULT: &str = "system.posix_acl_default";
const C_ACCESS: &CStr = c"system.posix_acl_access";
const C_DEFAULT: &CStr = c"system.posix_acl_default";

/// `POSIX_ACL_XATTR_VERSION`.
const VERSION: u32 = 2;
pub const ACL_USER_OBJ: u16 = 0x01;
pub const ACL_USER: u16 = 0x02;
pub const ACL_GROUP_OBJ: u16 = 0x04;
pub const ACL_GROUP: u16 = 0x08;
pub const ACL_MASK: u16 = 0x10;
pub const ACL_OTHER: u16 = 0x20;
/// The id stored with entries that have none (`ACL_UNDEFINED_ID`).
const UNDEFINED_ID: u32 = u32::MAX;

pub const READ: u16 = 4;
pub const WRITE: u16 = 2;
pub const EXECUTE: u16 = 1;
pub const RWX: u16 = READ | WRITE | EXECUTE;

/// Who an entry is about. The order of the variants is the order the kernel requires: by tag,
/// then by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tag {
    UserObj,
    User(u32),
    GroupObj,
    Group(u32),
    Mask,
    Other,
}

impl Tag {
    fn raw(self) -> (u16, u32) {
        match self {
            Tag::UserObj => (ACL_USER_OBJ, UNDEFINED_ID),
            Tag::User(uid) => (ACL_USER, uid),
            Tag::GroupObj => (ACL_GROUP_OBJ, UNDEFINED_ID),
            Tag::Group(gid) => (ACL_GROUP, gid),
            Tag::Mask => (ACL_MASK, UNDEFINED_ID),
            Tag::Other => (ACL_OTHER, UNDEFINED_ID),
        }
    }

    fn from_raw(tag: u16, id: u32) -> Option<Self> {
        Some(match tag {
            ACL_USER_OBJ => Tag::UserObj,
            ACL_USER => Tag::User(id),
            ACL_GROUP_OBJ => Tag::GroupObj,
            ACL_GROUP => Tag::Group(id),
            ACL_MASK => Tag::Mask,
            ACL_OTHER => Tag::Other,
            _ => return None,
        })
    }

    fn is_named(self) -> bool {
        matches!(self, Tag::User(_) | Tag::Group(_))
    }
}

/// One entry: who, and `READ | WRITE | EXECUTE` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub tag: Tag,
    pub perm: u16,
}

/// An ACL: entries sorted by tag and id, one per tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<Entry>,
}

impl Acl {
    /// The minimal ACL equivalent to permission bits (what a file without an ACL xattr has).
    pub fn from_mode(mode: u32) -> Self {
        let bits = |shift: u32| ((mode >> shift) & 7) as u16;
        Self {
            entries: vec![
                Entry {
                    tag: Tag::UserObj,
                    perm: bits(6),
                },
                Entry {
                    tag: Tag::GroupObj,
                    perm: bits(3),
                },
                Entry {
                    tag: Tag::Other,
                    perm: bits(0),
                },
            ],
        }
    }

    /// An ACL of exactly these entries, sorted; `Err` says why they do not make a valid ACL.
    pub fn from_entries(mut entries: Vec<Entry>) -> Result<Self, String> {
        entries.sort_by_key(|e| e.tag);
        if let Some(w) = entries.windows(2).find(|w| w[0].tag == w[1].tag) {
            return Err(format!("two entries for {}", tag_text(w[0].tag)));
        }
        if let Some(e) = entries.iter().find(|e| e.perm & !RWX != 0) {
            return Err(format!(
                "permission bits {:#o} of {}",
                e.perm,
                tag_text(e.tag)
            ));
        }
        let acl = Self { entries };
        for (tag, name) in [
            (Tag::UserObj, "user::"),
            (Tag::GroupObj, "group::"),
            (Tag::Other, "other::"),
        ] {
            if acl.get(tag).is_none() {
                return Err(format!("no {name} entry"));
            }
        }
        if acl.has_named() && acl.get(Tag::Mask).is_none() {
            return Err("named entries without a mask".into());
        }
        Ok(acl)
    }

    /// Decodes the xattr form: a little-endian u32 version (2), then entries of
    /// {tag u16, perm u16, id u32}.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let Some((header, body)) = bytes.split_first_chunk::<4>() else {
            return Err(format!("{} bytes, shorter than the header", bytes.len()));
        };
        let version = u32::from_le_bytes(*header);
        if version != VERSION {
            return Err(format!("version {version}, expected {VERSION}"));
        }
        if body.len() % 8 != 0 {
            return Err(format!(
                "{} bytes of entries, not a multiple of 8",
                body.len()
            ));
        }
        let mut entries = Vec::with_capacity(body.len() / 8);
        for chunk in body.chunks_exact(8) {
            let tag = u16::from_le_bytes([chunk[0], chunk[1]]);
            let perm = u16::from_le_bytes([chunk[2], chunk[3]]);
            let id = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            let tag = Tag::from_raw(tag, id).ok_or_else(|| format!("unknown tag {tag:#x}"))?;
            entries.push(Entry { tag, perm });
        }
        Self::from_entries(entries)
    }

    /// The xattr form, entries sorted by tag then id.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 * self.entries.len());
        out.extend_from_slice(&VERSION.to_le_bytes());
        for e in &self.entries {
            let (tag, id) = e.tag.raw();
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn get(&self, tag: Tag) -> Option<u16> {
        self.entries.iter().find(|e| e.tag == tag).map(|e| e.perm)
    }

    /// Whether the ACL has `user:<uid>:` or `group:<gid>:` entries.
    pub fn has_named(&self) -> bool {
        self.entries.iter().any(|e| e.tag.is_named())
    }

    /// Adds or replaces the entry of `uid`. A mask is created if the ACL had none (the
    /// group-class union, as setfacl computes it) and otherwise widened by `perm` only.
    pub fn set_user(&mut self, uid: u32, perm: u16) {
        let perm = perm & RWX;
        self.put(Tag::User(uid), perm);
        let mask = match self.get(Tag::Mask) {
            Some(mask) => mask | perm,
            None => self
                .entries
                .iter()
                .filter(|e| e.tag.is_named() || e.tag == Tag::GroupObj)
                .fold(0, |acc, e| acc | e.perm),
        };
        self.put(Tag::Mask, mask);
    }

    /// Removes the entry of `uid`; `false` if there was none. The mask stays, unless no named
    /// entry is left and it restricts nothing (then the ACL is minimal again).
    pub fn remove_user(&mut self, uid: u32) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.tag != Tag::User(uid));
        if self.entries.len() == before {
            return false;
        }
        if !self.has_named() {
            let group = self.get(Tag::GroupObj).unwrap_or(0);
            if self.get(Tag::Mask).is_some_and(|m| m & group == group) {
                self.entries.retain(|e| e.tag != Tag::Mask);
            }
        }
        true
    }

    fn put(&mut self, tag: Tag, perm: u16) {
        match self.entries.binary_search_by_key(&tag, |e| e.tag) {
            Ok(i) => self.entries[i].perm = perm,
            Err(i) => self.entries.insert(i, Entry { tag, perm }),
        }
    }
}

/// The short text form `getfacl -c -n` would print, comma-separated.
impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}{}", tag_text(e.tag), perm_text(e.perm))?;
        }
        Ok(())
    }
}

fn tag_text(tag: Tag) -> String {
    match tag {
        Tag::UserObj => "user::".into(),
        Tag::User(uid) => format!("user:{uid}:"),
        Tag::GroupObj => "group::".into(),
        Tag::Group(gid) => format!("group:{gid}:"),
        Tag::Mask => "mask::".into(),
        Tag::Other => "other::".into(),
    }
}

fn perm_text(perm: u16) -> String {
    [(READ, 'r'), (WRITE, 'w'), (EXECUTE, 'x')]
        .iter()
        .map(|&(bit, c)| if perm & bit != 0 { c } else { '-' })
        .collect()
}

/// The access ACL (every file) or the default ACL (directories: inherited by what is created
/// inside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Access,
    Default,
}

impl Kind {
    fn xattr(self) -> &'static CStr {
        match self {
            Kind::Access => C_ACCESS,
            Kind::Default => C_DEFAULT,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Access => XATTR_ACCESS,
            Kind::Default => XATTR_DEFAULT,
        }
    }
}

/// Errors of ACL operations; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("deny path {0} does not exist")]
    Missing(PathBuf),
    #[error("{0} is a symbolic link (ACLs are set on real files only)")]
    Symlink(PathBuf),
    #[error("{0} is not a directory")]
    NotDirectory(PathBuf),
    #[error("{xattr} of {path} is malformed: {reason}")]
    Format {
        path: PathBuf,
        xattr: &'static str,
        reason: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AclError + 'a {
    move |source| AclError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Makes `dir` the private directory of a sandbox identity: owned by `uid:gid`, mode 0700, and
/// access and default ACLs `user::rwx, user:<uid>:rwx, group::---, [group:<admin>:rwx,]
/// mask::rwx, other::---`, replacing whatever ACL it had. A symlink is refused rather than
/// followed.
pub fn grant_only(dir: &Path, uid: u32, gid: u32, admin_gid: Option<u32>) -> Result<(), AclError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTDIR) | Some(libc::ELOOP) => AclError::NotDirectory(dir.to_path_buf()),
            _ => io_err("open", dir)(e),
        })?;
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(io_err("chown", dir))?;
    file.set_permissions(fs::Permissions::from_mode(0o700))
        .map_err(io_err("chmod", dir))?;
    let acl = private_acl(uid, admin_gid);
    for kind in [Kind::Access, Kind::Default] {
        fset_xattr(&file, kind.xattr(), &acl.encode()).map_err(io_err("set ACL of", dir))?;
    }
    Ok(())
}

/// The ACL of a sandbox's private directory.
pub fn private_acl(uid: u32, admin_gid: Option<u32>) -> Acl {
    let mut entries = vec![
        Entry {
            tag: Tag::UserObj,
            perm: RWX,
        },
        Entry {
            tag: Tag::User(uid),
            perm: RWX,
        },
        Entry {
            tag: Tag::GroupObj,
            perm: 0,
        },
        Entry {
            tag: Tag::Mask,
            perm: RWX,
        },
        Entry {
            tag: Tag::Other,
            perm: 0,
        },
    ];
    if let Some(gid) = admin_gid {
        entries.push(Entry {
            tag: Tag::Group(gid),
            perm: RWX,
        });
    }
    entries.sort_by_key(|e| e.tag);
    Acl { entries }
}

/// Adds `user:<uid>:---` to the access ACL of the file at `path`, a host path without symlinks
/// (what [`locate`] returns; a symlink anywhere in it is refused, so a path swapped for a link
/// after it was checked cannot redirect the entry). Other entries stay as they are. `false`: the
/// uid already had exactly that entry.
pub fn deny(path: &Path, uid: u32) -> Result<bool, AclError> {
    set_user(path, uid, 0)
}

/// Sets `user:<uid>:<perm>` in the access ACL of `path` (no symlinks, as for [`deny`]), widening
/// the mask by `perm` only. `false`: the entry was already exactly that.
pub fn set_user(path: &Path, uid: u32, perm: u16) -> Result<bool, AclError> {
    let target = Target::open(path)?.ok_or_else(|| AclError::Missing(path.to_path_buf()))?;
    let mut acl = target
        .read(Kind::Access)?
        .unwrap_or_else(|| Acl::from_mode(target.mode));
    if acl.get(Tag::User(uid)) == Some(perm & RWX) {
        return Ok(false);
    }
    acl.set_user(uid, perm);
    target.write(Kind::Access, &acl)?;
    Ok(true)
}

/// Whether the access ACL of `path` (no symlinks, as for [`deny`]) has an entry for `uid`.
pub fn has_user(path: &Path, uid: u32) -> Result<bool, AclError> {
    let target = Target::open(path)?.ok_or_else(|| AclError::Missing(path.to_path_buf()))?;
    Ok(target
        .read(Kind::Access)?
        .is_some_and(|a| a.get(Tag::User(uid)).is_some()))
}

/// Removes every entry of `uid` from the ACLs of `path` (the default ACL too for a directory);
/// `true` if there was one. A path that no longer exists, or that has become a symlink (which
/// carries no ACL), has nothing to remove.
pub fn remove_user(path: &Path, uid: u32) -> Result<bool, AclError> {
    let target = match Target::open(path) {
        Ok(Some(t)) => t,
        Ok(None) | Err(AclError::Symlink(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let kinds: &[Kind] = if target.is_dir {
        &[Kind::Access, Kind::Default]
    } else {
        &[Kind::Access]
    };
    let mut removed = false;
    for &kind in kinds {
        if let Some(mut acl) = target.read(kind)? {
            if acl.remove_user(uid) {
                // A minimal access ACL written back makes the kernel drop the xattr and
                // set the mode from it.
                target.write(kind, &acl)?;
                removed = true;
            }
        }
    }
    Ok(removed)
}

/// The ACL of `path` (no symlinks, as for [`deny`]); `None` when the file has no such ACL.
pub fn read(path: &Path, kind: Kind) -> Result<Option<Acl>, AclError> {
    match Target::open(path)? {
        Some(target) => target.read(kind),
        None => Err(AclError::Missing(path.to_path_buf())),
    }
}

/// What a path names inside a root (see [`locate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// A file or directory: its host path (no symlink in it) and, for a non-directory, its
    /// number of hard links (other names that an entry on it would deny too).
    File {
        path: PathBuf,
        links: u64,
    },
    /// The last component is a symlink, to `target` (as written in the link).
    Symlink {
        target: PathBuf,
    },
    Missing,
}

/// Finds `path` as a process whose root is `root` would, following symlinks in its directories
/// (absolute ones and `..` stay inside `root`: `/bin/su` in a merged-/usr rootfs is
/// `<root>/usr/bin/su`), but not a symlink in its last component, which is reported as such.
pub fn locate(root: &Path, path: &Path) -> Result<Located, AclError> {
    let root_dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(root)
        .map_err(io_err("open", root))?;
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match nix::fcntl::openat2(root_dir.as_raw_fd(), rel, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(Located::Missing),
        Err(e) => return Err(io_err("resolve", &root.join(rel))(e.into())),
    };
    // SAFETY: openat2 just returned this descriptor; nothing else owns it.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let link = proc_fd_path(&file);
    let meta = file.metadata().map_err(io_err("stat", &link))?;
    if meta.file_type().is_symlink() {
        // readlinkat(fd, "") reads the link an O_PATH|O_NOFOLLOW descriptor stands for.
        let target = nix::fcntl::readlinkat(Some(file.as_raw_fd()), Path::new(""))
            .map_err(|e| io_err("readlink", &root.join(rel))(e.into()))?;
        return Ok(Located::Symlink {
            target: PathBuf::from(target),
        });
    }
    let real = fs::read_link(&link).map_err(io_err("readlink", &link))?;
    let links = if meta.is_dir() { 1 } else { meta.nlink() };
    Ok(Located::File { path: real, links })
}

/// A file opened by a path without symlinks (`O_PATH`, `RESOLVE_NO_SYMLINKS`), its xattrs
/// reached through `/proc/self/fd/N` so that every read and write lands on the same inode.
struct Target {
    _file: File,
    proc_path: CString,
    real: PathBuf,
    mode: u32,
    is_dir: bool,
}

impl Target {
    /// `None` when the path does not exist.
    fn open(path: &Path) -> Result<Option<Self>, AclError> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
        let fd = match nix::fcntl::openat2(libc::AT_FDCWD, path, how) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
            Err(Errno::ELOOP) => return Err(AclError::Symlink(path.to_path_buf())),
            Err(e) => return Err(io_err("open", path)(e.into())),
        };
        // SAFETY: openat2 just returned this descriptor; nothing else owns it.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let meta = file.metadata().map_err(io_err("stat", path))?;
        if meta.file_type().is_symlink() {
            return Err(AclError::Symlink(path.to_path_buf()));
        }
        let proc_path = CString::new(proc_fd_path(&file).into_os_string().into_encoded_bytes())
            .map_err(|e| io_err("open", path)(io::Error::new(ErrorKind::InvalidInput, e)))?;
        Ok(Some(Self {
            _file: file,
            proc_path,
            real: path.to_path_buf(),
            mode: meta.mode(),
            is_dir: meta.is_dir(),
        }))
    }

    fn read(&self, kind: Kind) -> Result<Option<Acl>, AclError> {
        let bytes =
            get_xattr(&self.proc_path, kind.xattr()).map_err(io_err("read ACL of", &self.real))?;
        bytes
            .map(|b| {
                Acl::decode(&b).map_err(|reason| AclError::Format {
                    path: self.real.clone(),
                    xattr: kind.name(),
                    reason,
                })
            })
            .transpose()
    }

    fn write(&self, kind: Kind, acl: &Acl) -> Result<(), AclError> {
        set_xattr(&self.proc_path, kind.xattr(), &acl.encode())
            .map_err(io_err("set ACL of", &self.real))
    }
}

fn proc_fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `getxattr(2)`; `None` for ENODATA (no such attribute).
fn get_xattr(path: &CStr, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    loop {
        // SAFETY: path and name are NUL-terminated strings that outlive the call; a null buffer
        // of size 0 only asks for the value's size.
        let size = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return no_data_is_none(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf is valid for writes of buf.len() bytes, and path and name as above.
        let got = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if got < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew between the two calls
            }
            return no_data_is_none(err);
        }
        buf.truncate(got as usize);
        return Ok(Some(buf));
    }
}

fn no_data_is_none(err: io::Error) -> io::Result<Option<Vec<u8>>> {
    if err.raw_os_error() == Some(libc::ENODATA) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// `setxattr(2)`.
fn set_xattr(path: &CStr, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: path and name are NUL-terminated and value is valid for value.len() bytes, all
    // outliving the call.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `fsetxattr(2)`.
fn fset_xattr(file: &File, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: the descriptor is open for the duration of the call, name is NUL-terminated and
    // value is valid for value.len() bytes.
    let rc = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok<T, E: fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn acl(text: &str) -> Acl {
        let entries = text
            .split(',')
            .map(|e| {
                let (who, perm) = e.rsplit_once(':').unwrap_or_else(|| panic!("{e}"));
                let perm = perm.chars().fold(0, |acc, c| {
                    acc | match c {
                        'r' => READ,
                        'w' => WRITE,
                        'x' => EXECUTE,
                        _ => 0,
                    }
                });
                let tag = match who.split_once(':').unwrap_or_else(|| panic!("{e}")) {
                    ("user", "") => Tag::UserObj,
                    ("user", id) => Tag::User(ok(id.parse())),
                    ("group", "") => Tag::GroupObj,
                    ("group", id) => Tag::Group(ok(id.parse())),
                    ("mask", _) => Tag::Mask,
                    ("other", _) => Tag::Other,
                    _ => panic!("{e}"),
                };
                Entry { tag, perm }
            })
            .collect();
        ok(Acl::from_entries(entries))
    }

    #[test]
    fn encode_is_the_kernel_layout() {
        let a = acl("user::rw-,user:1000:r--,group::r--,mask::r--,other::---");
        let mut want = vec![2, 0, 0, 0];
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            want.extend_from_slice(&tag.to_le_bytes());
            want.extend_from_slice(&perm.to_le_bytes());
            want.extend_from_slice(&id.to_le_bytes());
        }
        assert_eq!(a.encode(), want);
        assert_eq!(ok(Acl::decode(&want)), a);
    }

    #[test]
    fn entries_are_sorted_by_tag_then_id() {
        let a = acl("other::---,group:9:r--,user:20:---,mask::rwx,user:3:rwx,group::r-x,user::rwx,group:1:rwx");
        assert_eq!(
            a.to_string(),
            "user::rwx,user:3:rwx,user:20:---,group::r-x,group:1:rwx,group:9:r--,mask::rwx,other::---"
        );
        let bytes = a.encode();
        assert_eq!(ok(Acl::decode(&bytes)).encode(), bytes);
    }

    #[test]
    fn decode_rejects_malformed_input() {
        let good = acl("user::rwx,group::r-x,other::r-x").encode();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![2, 0], "shorter than the header"),
            ([&[1u8, 0, 0, 0][..], &good[4..]].concat(), "version 1"),
            (good[..good.len() - 3].to_vec(), "not a multiple of 8"),
            (
                [&good[..], &[0x40, 0, 7, 0, 0, 0, 0, 0][..]].concat(),
                "unknown tag 0x40",
            ),
            (
                [&good[..], &[0x02, 0, 7, 0, 5, 0, 0, 0][..]].concat(),
                "named entries without a mask",
            ),
            (
                [&good[..], &[0x20, 0, 7, 0, 0, 0, 0, 0][..]].concat(),
                "two entries for other::",
            ),
            (good[..12].to_vec(), "no group:: entry"),
            (
                [&good[..], &[0x10, 0, 8, 0, 0, 0, 0, 0][..]].concat(),
                "permission bits 0o10 of mask::",
            ),
        ];
        for (bytes, want) in cases {
            match Acl::decode(&bytes) {
                Ok(a) => panic!("accepted {bytes:?} as {a}"),
                Err(e) => assert!(e.contains(want), "{e} (wanted {want})"),
            }
        }
    }

    #[test]
    fn from_mode_is_the_minimal_acl() {
        assert_eq!(
            Acl::from_mode(0o104751).to_string(),
            "user::rwx,group::r-x,other::--x"
        );
    }

    #[test]
    fn deny_on_a_file_without_acl_adds_the_mask_setfacl_would() {
        let mut a = Acl::from_mode(0o755);
        a.set_user(2_010_000_000, 0);
        assert_eq!(
            a.to_string(),
            "user::rwx,user:2010000000:---,group::r-x,mask::r-x,other::r-x"
        );
    }

    #[test]
    fn deny_keeps_an_existing_mask() {
        // An administrator narrowed the mask with chmod: setfacl would widen it back to rwx.
        let mut a = acl("user::rwx,group::rwx,group:50:rwx,mask::r-x,other::r-x");
        a.set_user(7, 0);
        assert_eq!(
            a.to_string(),
            "user::rwx,user:7:---,group::rwx,group:50:rwx,mask::r-x,other::r-x"
        );
    }

    #[test]
    fn a_grant_widens_the_mask_by_its_own_bits() {
        let mut a = acl("user::rwx,group::r--,group:50:r--,mask::r--,other::---");
        a.set_user(7, READ | EXECUTE);
        assert_eq!(
            a.to_string(),
            "user::rwx,user:7:r-x,group::r--,group:50:r--,mask::r-x,other::---"
        );
        a.set_user(7, 0);
        assert_eq!(a.get(Tag::User(7)), Some(0), "replaced, not added twice");
        assert_eq!(a.entries().len(), 6);
    }

    #[test]
    fn remove_undoes_deny_exactly() {
        for start in [
            "user::rwx,group::r-x,other::r-x",
            "user::rw-,user:1234:rwx,group::r--,group:55:r-x,mask::rwx,other::---",
            "user::rwx,group::rwx,mask::r--,other::---",
        ] {
            let before = acl(start);
            let mut a = before.clone();
            a.set_user(9, 0);
            let with_other = {
                let mut b = a.clone();
                b.set_user(8, 0);
                b
            };
            assert!(a.remove_user(9));
            assert_eq!(a.encode(), before.encode(), "{start}");
            let mut b = with_other;
            assert!(b.remove_user(9));
            let mut want = before.clone();
            want.set_user(8, 0);
            assert_eq!(b, want, "{start}");
        }
    }

    #[test]
    fn remove_of_an_absent_uid_changes_nothing() {
        let mut a = acl("user::rwx,user:5:---,group::r-x,mask::r-x,other::r-x");
        let before = a.clone();
        assert!(!a.remove_user(6));
        assert_eq!(a, before);
    }

    #[test]
    fn private_acl_grants_the_identity_and_the_admin_group_only() {
        assert_eq!(
            private_acl(2_010_000_000, Some(4242)).to_string(),
            "user::rwx,user:2010000000:rwx,group::---,group:4242:rwx,mask::rwx,other::---"
        );
        assert_eq!(
            private_acl(2_010_000_000, None).to_string(),
            "user::rwx,user:2010000000:rwx,group::---,mask::rwx,other::---"
        );
        let a = private_acl(1, Some(2));
        assert_eq!(ok(Acl::decode(&a.encode())), a);
    }

    fn symlink(target: &str, link: &Path) {
        ok(std::os::unix::fs::symlink(target, link));
    }

    /// A rootfs with a merged /usr, an absolute symlink through /etc/alternatives and a symlink
    /// trying to escape.
    fn fake_rootfs() -> tempfile::TempDir {
        let root = ok(tempfile::tempdir());
        let r = root.path();
        ok(fs::create_dir_all(r.join("usr/bin")));
        ok(fs::create_dir_all(r.join("etc/alternatives")));
        ok(fs::write(r.join("usr/bin/su"), "su"));
        ok(fs::write(r.join("usr/bin/gcc-12"), "gcc"));
        symlink("usr/bin", &r.join("bin"));
        symlink("gcc-12", &r.join("usr/bin/gcc"));
        symlink("/usr/bin/gcc", &r.join("etc/alternatives/cc"));
        symlink("/etc/alternatives/cc", &r.join("usr/bin/cc"));
        symlink("../../../../../../etc", &r.join("usr/bin/escape-dir"));
        root
    }

    #[test]
    fn locate_follows_directory_symlinks_inside_the_root_only() {
        let root = fake_rootfs();
        let r = ok(fs::canonicalize(root.path()));
        let at = |p: &str| ok(locate(&r, Path::new(p)));
        let file = |p: &str| Located::File {
            path: r.join(p),
            links: 1,
        };
        assert_eq!(at("/bin/su"), file("usr/bin/su"));
        assert_eq!(at("/usr/bin/gcc-12"), file("usr/bin/gcc-12"));
        assert_eq!(
            at("/usr/bin/cc"),
            Located::Symlink {
                target: "/etc/alternatives/cc".into()
            }
        );
        assert_eq!(
            at("/bin/gcc"),
            Located::Symlink {
                target: "gcc-12".into()
            }
        );
        assert_eq!(at("/"), file(""));
        assert_eq!(at("/nope"), Located::Missing);
        assert_eq!(at("/usr/bin/su/below-a-file"), Located::Missing);
        // `..` through a symlink stops at the root: this is the rootfs's /etc, not the host's.
        assert_eq!(at("/usr/bin/escape-dir/passwd"), Located::Missing);
        ok(fs::write(r.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n"));
        assert_eq!(at("/usr/bin/escape-dir/passwd"), file("etc/passwd"));
    }

    #[test]
    fn hard_links_are_counted() {
        let root = fake_rootfs();
        let r = ok(fs::canonicalize(root.path()));
        ok(fs::hard_link(r.join("usr/bin/su"), r.join("usr/bin/su2")));
        assert_eq!(
            ok(locate(&r, Path::new("/usr/bin/su2"))),
            Located::File {
                path: r.join("usr/bin/su2"),
                links: 2
            }
        );
    }

    #[test]
    fn deny_and_remove_refuse_to_follow_symlinks() {
        let root = fake_rootfs();
        let r = ok(fs::canonicalize(root.path()));
        for p in [r.join("usr/bin/gcc"), r.join("bin/su")] {
            match deny(&p, 5) {
                Err(AclError::Symlink(got)) => assert_eq!(got, p),
                other => panic!("{}: {other:?}", p.display()),
            }
            assert!(!ok(remove_user(&p, 5)), "nothing to remove through a link");
        }
    }

    #[test]
    fn deny_of_a_missing_path_is_a_clear_error() {
        let dir = ok(tempfile::tempdir());
        let p = dir.path().join("nope");
        let err = deny(&p, 5).map(|_| ()).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some(format!("deny path {} does not exist", p.display()))
        );
        assert!(!ok(remove_user(&p, 5)));
    }

    // ---- root tests against the real filesystem (/tmp is ext4 here) ----

    const U1: u32 = 2_147_000_001;
    const U2: u32 = 2_147_000_002;
    const U3: u32 = 2_147_000_003;
    const ADMIN: u32 = 2_147_000_100;

    fn require_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            true
        } else {
            eprintln!("skipped: needs root (chown, setfacl, processes running as other uids)");
            false
        }
    }

    /// A scratch directory every uid can traverse, so that only ACLs decide access below it.
    fn shared_dir() -> tempfile::TempDir {
        let dir = ok(tempfile::Builder::new()
            .prefix("paddock-acl-")
            .tempdir_in("/tmp"));
        ok(fs::set_permissions(
            dir.path(),
            fs::Permissions::from_mode(0o755),
        ));
        dir
    }

    fn run(cmd: &str, args: &[&str]) -> String {
        let out = ok(std::process::Command::new(cmd).args(args).output());
        assert!(
            out.status.success(),
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn getfacl(path: &Path) -> String {
        run(
            "getfacl",
            &[
                "-n",
                "--omit-header",
                "--absolute-names",
                &path.to_string_lossy(),
            ],
        )
    }

    fn raw(path: &Path, kind: Kind) -> Option<Vec<u8>> {
        let c = ok(CString::new(path.as_os_str().as_encoded_bytes()));
        ok(get_xattr(&c, kind.xattr()))
    }

    /// Runs `sh -c script` as uid:gid (no supplementary groups); returns (success, stderr).
    fn sh_as(uid: u32, gid: u32, script: &str) -> (bool, String) {
        use std::os::unix::process::CommandExt;
        let out = ok(std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .uid(uid)
            .gid(gid)
            .current_dir("/")
            .output());
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn mode(path: &Path) -> u32 {
        ok(fs::metadata(path)).mode() & 0o7777
    }

    #[test]
    fn grant_only_is_what_getfacl_shows() {
        if !require_root() {
            return;
        }
        let dir = shared_dir();
        let a = dir.path().join("a");
        ok(fs::create_dir(&a));
        ok(grant_only(&a, U1, U1, Some(ADMIN)));
        assert_eq!(
            getfacl(&a),
            format!(
                "user::rwx\nuser:{U1}:rwx\ngroup::---\ngroup:{ADMIN}:rwx\nmask::rwx\nother::---\n\
                 default:user::rwx\ndefault:user:{U1}:rwx\ndefault:group::---\n\
                 default:group:{ADMIN}:rwx\ndefault:mask::rwx\ndefault:other::---\n\n"
            )
        );
        let meta = ok(fs::metadata(&a));
        assert_eq!((meta.uid(), meta.gid()), (U1, U1));
        // Group bits show the mask; `other` has nothing.
        assert_eq!(meta.mode() & 0o7777, 0o770);
        assert_eq!(
            ok(read(&a, Kind::Access)),
            Some(private_acl(U1, Some(ADMIN)))
        );

        // Again, without an admin group, over the existing ACL: replaced, not merged.
        ok(grant_only(&a, U1, U1, None));
        assert_eq!(
            getfacl(&a),
            format!(
                "user::rwx\nuser:{U1}:rwx\ngroup::---\nmask::rwx\nother::---\n\
                 default:user::rwx\ndefault:user:{U1}:rwx\ndefault:group::---\n\
                 default:mask::rwx\ndefault:other::---\n\n"
            )
        );
    }

    #[test]
    fn grant_only_refuses_symlinks_and_files() {
        if !require_root() {
            return;
        }
        let dir = shared_dir();
        let real = dir.path().join("real");
        ok(fs::create_dir(&real));
        let link = dir.path().join("link");
        symlink(&real.to_string_lossy(), &link);
        let file = dir.path().join("file");
        ok(fs::write(&file, ""));
        for p in [&link, &file] {
            match grant_only(p, U1, U1, None) {
                Err(AclError::NotDirectory(got)) => assert_eq!(&got, p),
                other => panic!("{}: {other:?}", p.display()),
            }
        }
        assert_eq!(
            ok(fs::metadata(&real)).uid(),
            0,
            "the symlink's target was left alone"
        );
        assert_eq!(raw(&real, Kind::Access), None);
    }

    #[test]
    fn two_sandboxes_cannot_touch_each_others_directories() {
        if !require_root() {
            return;
        }
        let dir = shared_dir();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for (d, uid) in [(&a, U1), (&b, U2)] {
            ok(fs::create_dir(d));
            ok(grant_only(d, uid, uid, Some(ADMIN)));
            let (ok_, err) = sh_as(
                uid,
                uid,
                &format!("echo secret > {0}/f && ls {0}", d.display()),
            );
            assert!(ok_, "owner cannot use its own directory: {err}");
        }
        for (me, other) in [(U1, &b), (U2, &a)] {
            let o = other.display();
            for script in [
                format!("ls {o}"),
                format!("cat {o}/f"),
                format!("touch {o}/new"),
            ] {
                let (ok_, err) = sh_as(me, me, &script);
                assert!(!ok_, "{me} could run `{script}`");
                assert!(err.contains("Permission denied"), "{script}: {err}");
            }
            assert!(!sh_as(me, me, &format!("cd {o}")).0, "{me} could enter {o}");
        }
        // Neither an unrelated identity…
        let (ok_, _) = sh_as(U3, U3, &format!("ls {}", a.display()));
        assert!(!ok_);
        // …but the admin group can, also files the sandbox created (default ACL).
        let (ok_, err) = sh_as(U3, ADMIN, &format!("ls {0} && cat {0}/f", a.display()));
        assert!(ok_, "admin group: {err}");
    }

    #[test]
    fn a_denied_binary_fails_with_eacces() {
        if !require_root() {
            return;
        }
        use std::os::unix::process::CommandExt;
        let dir = shared_dir();
        let bin = dir.path().join("cat");
        ok(fs::copy("/bin/cat", &bin));
        ok(fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)));
        let link = dir.path().join("cat-link");
        symlink("cat", &link);

        // Never through a symlink: the link is refused, the file stays as it was.
        assert!(matches!(deny(&link, U1), Err(AclError::Symlink(_))));
        assert_eq!(raw(&bin, Kind::Access), None);
        assert!(ok(deny(&bin, U1)), "a new entry");
        assert_eq!(
            getfacl(&bin),
            format!("user::rwx\nuser:{U1}:---\ngroup::r-x\nmask::r-x\nother::r-x\n\n")
        );
        assert_eq!(mode(&bin), 0o755, "mode kept");
        assert!(ok(has_user(&bin, U1)));
        assert!(!ok(has_user(&bin, U2)));

        let exec_as = |uid: u32| {
            std::process::Command::new(&bin)
                .arg("/etc/hostname")
                .uid(uid)
                .gid(uid)
                .current_dir("/")
                .output()
        };
        match exec_as(U1) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}"),
            Ok(out) => panic!("denied uid ran it: {out:?}"),
        }
        let (read_ok, err) = sh_as(U1, U1, &format!("cat {} > /dev/null", bin.display()));
        assert!(!read_ok && err.contains("Permission denied"), "{err}");
        // Another identity is not affected.
        assert!(ok(exec_as(U2)).status.success());
        let (read_ok, err) = sh_as(U2, U2, &format!("cat {} > /dev/null", bin.display()));
        assert!(read_ok, "{err}");
        // Denying twice changes nothing.
        let before = raw(&bin, Kind::Access);
        assert!(!ok(deny(&bin, U1)));
        assert_eq!(raw(&bin, Kind::Access), before);
    }

    #[test]
    fn deny_writes_what_setfacl_writes() {
        if !require_root() {
            return;
        }
        let dir = shared_dir();
        for setup in [None, Some("u:1234:r-x,g:55:rwx")] {
            let (ours, theirs) = (dir.path().join("ours"), dir.path().join("theirs"));
            for p in [&ours, &theirs] {
                let _ = fs::remove_file(p);
                ok(fs::write(p, ""));
                ok(fs::set_permissions(p, fs::Permissions::from_mode(0o750)));
                if let Some(s) = setup {
                    run("setfacl", &["-m", s, &p.to_string_lossy()]);
                }
            }
            ok(deny(&ours, U1));
            run(
                "setfacl",
                &["-m", &format!("u:{U1}:---"), &theirs.to_string_lossy()],
            );
            assert_eq!(
                raw(&ours, Kind::Access),
                raw(&theirs, Kind::Access),
                "{setup:?}"
            );
            assert_eq!(mode(&ours), mode(&theirs));
        }
    }

    #[test]
    fn remove_user_leaves_every_other_entry_byte_identical() {
        if !require_root() {
            return;
        }
        let dir = shared_dir();
        // A file with host entries, denied to two sandboxes.
        let f = dir.path().join("f");
        ok(fs::write(&f, ""));
        run(
            "setfacl",
            &["-m", "u:1234:rwx,g:55:r-x", &f.to_string_lossy()],
        );
        let (s0, m0) = (raw(&f, Kind::Access), mode(&f));
        ok(deny(&f, U2));
        let s1 = raw(&f, Kind::Access);
        ok(deny(&f, U1));
        assert!(ok(remove_user(&f, U1)));
        assert_eq!(raw(&f, Kind::Access), s1);
        assert!(!ok(remove_user(&f, U1)), "second removal finds nothing");
        assert!(ok(remove_user(&f, U2)));
        assert_eq!(raw(&f, Kind::Access), s0);
        assert_eq!(mode(&f), m0);

        // A file without an ACL gets none back, and its mode.
        let g = dir.path().join("g");
        ok(fs::write(&g, ""));
        ok(fs::set_permissions(&g, fs::Permissions::from_mode(0o4751)));
        ok(deny(&g, U1));
        assert!(raw(&g, Kind::Access).is_some());
        assert_eq!(mode(&g), 0o4751, "the setuid bit survives a deny");
        assert!(ok(remove_user(&g, U1)));
        assert_eq!(raw(&g, Kind::Access), None);
        assert_eq!(mode(&g), 0o4751);
        assert_eq!(getfacl(&g), "user::rwx\ngroup::r-x\nother::--x\n\n");

        // A directory: access and default entries of the uid go, the host's stay.
        let d = dir.path().join("d");
        ok(fs::create_dir(&d));
        run(
            "setfacl",
            &[
                "-m",
                "u:1234:rwx,d:u:1234:rwx,d:g:55:r-x",
                &d.to_string_lossy(),
            ],
        );
        let (a0, d0) = (raw(&d, Kind::Access), raw(&d, Kind::Default));
        run(
            "setfacl",
            &[
                "-m",
                &format!("u:{U1}:rwx,d:u:{U1}:rwx,u:{U2}:r-x"),
                &d.to_string_lossy(),
            ],
        );
        assert!(ok(remove_user(&d, U1)));
        assert!(ok(remove_user(&d, U2)));
        assert_eq!(raw(&d, Kind::Access), a0);
        assert_eq!(raw(&d, Kind::Default), d0);
    }
}
