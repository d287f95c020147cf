//! POSIX ACLs: the attributes "system.posix_acl_access" and
//! "system.posix_acl_default", kept in an inode's xattr chain in the
//! kernel's own encoding and interpreted here the way Linux interprets them
//! for a local filesystem (fs/posix_acl.c). Over FUSE with FUSE_POSIX_ACL
//! the kernel checks permissions against the ACLs it reads from us and
//! leaves everything else to the filesystem: what an ACL does to the mode
//! bits, chmod's effect on an ACL, and inheritance on create.
//!
//! What it promises:
//!
//! * **Encoding** ([`PosixAcl`]): a 4-byte little-endian version (2) and
//!   8-byte entries {tag u16, perm u16, id u32}. [`PosixAcl::decode`]
//!   refuses anything `posix_acl_valid` refuses (`Invalid`, EINVAL; another
//!   version is `NotSupported`, EOPNOTSUPP): entries in the order USER_OBJ,
//!   USER…, GROUP_OBJ, GROUP…, MASK, OTHER, exactly one of each *_OBJ and
//!   OTHER, a MASK whenever there is a named USER or GROUP, perms within
//!   rwx. A header with no entry decodes to "no ACL".
//! * **Setting the access ACL** ([`Fs::set_acl`]): the mode's rwx bits
//!   become the ACL's (user_obj, mask or else group_obj, other); an ACL the
//!   mode says entirely is not stored (an old one is removed); the setgid
//!   bit is cleared unless the caller is in the file's group or uid 0
//!   (`posix_acl_update_mode`). One transaction, ctime set.
//! * **Default ACLs** are directories' only (`AccessDenied` elsewhere, as
//!   Linux answers; removing one from a non-directory is a no-op) and are
//!   stored as given.
//! * **Removing** either ACL never fails for a missing one and leaves the
//!   mode alone (as `setfacl -b` on ext4).
//! * **chmod** ([`Fs::acl_follow_mode`], called by setattr in the same
//!   transaction): the stored access ACL's user_obj, mask (or group_obj)
//!   and other entries take the new mode's bits (`posix_acl_chmod`).
//! * **Inheritance** ([`Fs::inherit_acls`] and [`inherit`], used by the
//!   namespace operations): with a default ACL on the parent, a new inode's
//!   mode is masked by it (`posix_acl_create`, the umask is *not* applied)
//!   and it gets the masked ACL as its access ACL unless the result is
//!   equivalent to the mode; a new directory also gets the default ACL.
//!   Without one the umask is applied. Symlinks get neither.
//!
//! Relies on: the xattr chain (`crate::xattr`, which stores the names
//! verbatim), the caller holding the inode's lock exclusively (after the
//! journal handle) for every change, and `privs.rs` for who keeps setgid.

use super::inode::InodeState;
use super::privs::Actor;
use super::time;
use super::Fs;
use crate::error::{FsError, FsResult};
use crate::format::FileType;
use crate::journal::TxHandle;
use crate::meta_tx::MetaTx;
use crate::xattr::{self, SetMode};

/// Name of the access ACL.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// Name of the default ACL (directories).
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// The one version of the xattr encoding.
const ACL_VERSION: u32 = 2;
const HEADER_LEN: usize = 4;
const ENTRY_LEN: usize = 8;

/// Entry tags (linux/posix_acl.h).
pub const ACL_USER_OBJ: u16 = 0x01;
pub const ACL_USER: u16 = 0x02;
pub const ACL_GROUP_OBJ: u16 = 0x04;
pub const ACL_GROUP: u16 = 0x08;
pub const ACL_MASK: u16 = 0x10;
pub const ACL_OTHER: u16 = 0x20;
/// The id of entries that name no one (the *_OBJ, MASK and OTHER ones).
pub const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// Which of an inode's two ACLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclKind {
    Access,
    Default,
}

impl AclKind {
    /// The ACL an attribute name stands for, if it names one.
    pub fn of_name(name: &[u8]) -> Option<AclKind> {
        match name {
            ACL_ACCESS => Some(AclKind::Access),
            ACL_DEFAULT => Some(AclKind::Default),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn name(self) -> &'static [u8] {
        match self {
            AclKind::Access => ACL_ACCESS,
            AclKind::Default => ACL_DEFAULT,
        }
    }
}

/// One entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    /// rwx bits (4 read, 2 write, 1 execute).
    pub perm: u16,
    /// uid or gid for ACL_USER / ACL_GROUP, else [`ACL_UNDEFINED_ID`].
    pub id: u32,
}

/// A valid POSIX ACL (at least USER_OBJ, GROUP_OBJ and OTHER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosixAcl {
    entries: Vec<AclEntry>,
}

impl PosixAcl {
    /// The ACL of an xattr value; `None` for a header without entries.
    pub fn decode(bytes: &[u8]) -> FsResult<Option<PosixAcl>> {
        if bytes.len() < HEADER_LEN {
            return Err(FsError::Invalid("POSIX ACL shorter than its header".into()));
        }
        let version = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if version != ACL_VERSION {
            return Err(FsError::NotSupported);
        }
        let body = &bytes[HEADER_LEN..];
        if body.len() % ENTRY_LEN != 0 {
            return Err(FsError::Invalid(format!(
                "POSIX ACL of {} bytes is not a whole number of entries",
                bytes.len()
            )));
        }
        if body.is_empty() {
            return Ok(None);
        }
        let entries = body
            .chunks_exact(ENTRY_LEN)
            .map(|e| AclEntry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]),
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        let acl = PosixAcl { entries };
        acl.validate()?;
        Ok(Some(acl))
    }

    /// The xattr value (ids of unnamed entries written as undefined).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + ENTRY_LEN * self.entries.len());
        out.extend_from_slice(&ACL_VERSION.to_le_bytes());
        for e in &self.entries {
            let id = if matches!(e.tag, ACL_USER | ACL_GROUP) {
                e.id
            } else {
                ACL_UNDEFINED_ID
            };
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&id.to_le_bytes());
        }
        out
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[AclEntry] {
        &self.entries
    }

    /// `posix_acl_valid`: the order and the entries a valid ACL has.
    fn validate(&self) -> FsResult<()> {
        #[derive(PartialEq)]
        enum State {
            UserObj,
            User,
            Group,
            Other,
            Done,
        }
        let bad = |why: &str| Err(FsError::Invalid(format!("POSIX ACL: {why}")));
        let mut state = State::UserObj;
        let mut needs_mask = false;
        for e in &self.entries {
            if e.perm & !7 != 0 {
                return bad("permission bits beyond rwx");
            }
            state = match (e.tag, &state) {
                (ACL_USER_OBJ, State::UserObj) => State::User,
                (ACL_USER, State::User) => {
                    needs_mask = true;
                    State::User
                }
                (ACL_GROUP_OBJ, State::User) => State::Group,
                (ACL_GROUP, State::Group) => {
                    needs_mask = true;
                    State::Group
                }
                (ACL_MASK, State::Group) => State::Other,
                (ACL_OTHER, State::Other) => State::Done,
                (ACL_OTHER, State::Group) if !needs_mask => State::Done,
                _ => return bad("entries missing, repeated, out of order or unknown"),
            };
        }
        if state != State::Done {
            return bad("entries missing");
        }
        Ok(())
    }

    /// The rwx bits of `perm` the ACL says (`posix_acl_equiv_mode`), and
    /// whether it says more than mode bits can (named entries or a mask).
    pub fn equiv_mode(&self, perm: u16) -> (u16, bool) {
        let mut mode = 0u16;
        let mut not_equiv = false;
        for e in &self.entries {
            match e.tag {
                ACL_USER_OBJ => mode |= (e.perm & 7) << 6,
                ACL_GROUP_OBJ => mode |= (e.perm & 7) << 3,
                ACL_OTHER => mode |= e.perm & 7,
                ACL_MASK => {
                    mode = (mode & !0o070) | ((e.perm & 7) << 3);
                    not_equiv = true;
                }
                _ => not_equiv = true,
            }
        }
        ((perm & !0o777) | mode, not_equiv)
    }

    /// The entries mode bits stand for take `perm`'s bits
    /// (`posix_acl_chmod`).
    pub fn chmod(&mut self, perm: u16) {
        let has_mask = self.entries.iter().any(|e| e.tag == ACL_MASK);
        for e in &mut self.entries {
            match e.tag {
                ACL_USER_OBJ => e.perm = (perm >> 6) & 7,
                ACL_MASK => e.perm = (perm >> 3) & 7,
                ACL_GROUP_OBJ if !has_mask => e.perm = (perm >> 3) & 7,
                ACL_OTHER => e.perm = perm & 7,
                _ => {}
            }
        }
    }

    /// A default ACL applied to a new inode asking for `perm`
    /// (`posix_acl_create_masq`): the ACL's entries and the mode mask each
    /// other; returns the new permission bits and whether the ACL says
    /// more than they do.
    pub fn create_masq(&mut self, perm: u16) -> (u16, bool) {
        let mut mode = perm;
        let mut not_equiv = false;
        let has_mask = self.entries.iter().any(|e| e.tag == ACL_MASK);
        for e in &mut self.entries {
            match e.tag {
                ACL_USER_OBJ => {
                    e.perm &= (mode >> 6) & 7;
                    mode &= (e.perm << 6) | !0o700;
                }
                ACL_USER | ACL_GROUP => not_equiv = true,
                ACL_OTHER => {
                    e.perm &= mode & 7;
                    mode &= e.perm | !0o007;
                }
                ACL_MASK => {
                    not_equiv = true;
                    e.perm &= (mode >> 3) & 7;
                    mode &= (e.perm << 3) | !0o070;
                }
                ACL_GROUP_OBJ if !has_mask => {
                    e.perm &= (mode >> 3) & 7;
                    mode &= (e.perm << 3) | !0o070;
                }
                _ => {}
            }
        }
        (mode, not_equiv)
    }
}

/// What a new inode gets from its parent's default ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inherited {
    /// The permission bits to create it with.
    pub perm: u16,
    /// Its access ACL, if it needs one.
    pub access: Option<PosixAcl>,
    /// Its default ACL (directories under a default ACL).
    pub default: Option<PosixAcl>,
}

/// `posix_acl_create`: a new inode of `file_type` asking for permission
/// bits `perm` (≤ 0o7777) in a directory whose default ACL is `parent_default`,
/// by a caller with `umask`.
pub fn inherit(
    parent_default: Option<&PosixAcl>,
    file_type: FileType,
    perm: u16,
    umask: u32,
) -> Inherited {
    let perm = perm & 0o7777;
    let none = |perm| Inherited {
        perm,
        access: None,
        default: None,
    };
    if file_type == FileType::Symlink {
        return none(perm);
    }
    let Some(default) = parent_default else {
        return none(perm & !(umask as u16 & 0o777));
    };
    let mut access = default.clone();
    let (perm, not_equiv) = access.create_masq(perm);
    Inherited {
        perm,
        access: not_equiv.then_some(access),
        default: (file_type == FileType::Directory).then(|| default.clone()),
    }
}

/// The ACL of kind `kind` stored for the inode held by `state` (`None`:
/// none, or a stored header without entries).
pub(crate) fn stored_acl(
    cache: &keelfs_engine::bufio::Bufio,
    state: &InodeState,
    kind: AclKind,
) -> FsResult<Option<PosixAcl>> {
    if state.xattr.is_none() {
        return Ok(None);
    }
    match xattr::get(cache, state.xattr, kind.name()) {
        Ok(value) => PosixAcl::decode(&value).map_err(|e| {
            FsError::Corrupt(format!(
                "inode {}: stored {}: {e}",
                state.ino(),
                String::from_utf8_lossy(kind.name())
            ))
        }),
        Err(FsError::NoAttr) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Fs {
    /// Sets (`Some`, an xattr value) or removes (`None`) ACL `kind` of
    /// `ino` for `actor`; `flags` as setxattr's (`XATTR_CREATE`,
    /// `XATTR_REPLACE`, applied to the stored attribute). See the module
    /// docs.
    pub fn set_acl(
        &self,
        ino: u64,
        kind: AclKind,
        value: Option<&[u8]>,
        flags: u32,
        actor: &Actor<'_>,
    ) -> FsResult<()> {
        let mode = SetMode::from_flags(flags)?;
        let acl = match value {
            Some(bytes) => PosixAcl::decode(bytes)?,
            None => None,
        };
        self.check_writable()?;
        let tx = self.journal.start()?;
        let cell = self.inode(ino)?;
        let mut state = cell.write();
        state.check_live()?;
        super::chattr::check_xattr_change(&state)?;
        if kind == AclKind::Default && state.file_type != FileType::Directory {
            return if acl.is_some() {
                Err(FsError::AccessDenied)
            } else {
                Ok(())
            };
        }
        let stored = match (kind, acl) {
            (AclKind::Access, Some(acl)) => {
                let (perm, not_equiv) = acl.equiv_mode(state.permissions);
                state.permissions = super::privs::after_acl_set(perm, state.gid, actor);
                not_equiv.then_some(acl)
            }
            (_, acl) => acl,
        };
        match stored {
            Some(acl) => self.put_acl_xattr(&tx, &mut state, kind, Some(&acl.encode()), mode)?,
            None => self.put_acl_xattr(&tx, &mut state, kind, None, mode)?,
        }
        state.ctime = time::now();
        self.store_inode(&tx, &state)
    }

    /// Writes (or removes, `None`) the xattr of ACL `kind` of the inode
    /// held by `state` in `tx`, keeping its "blocks held"; the caller
    /// stores the inode. Removing a missing one is no error.
    fn put_acl_xattr(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        kind: AclKind,
        value: Option<&[u8]>,
        mode: SetMode,
    ) -> FsResult<()> {
        let mt = MetaTx::new(&self.cache, tx, self.meta_allocator());
        let mut chain = state.xattr;
        let result = match value {
            Some(v) => xattr::set(&mt, &mut chain, kind.name(), v, mode),
            None if state.xattr.is_none() => Ok(()),
            None => match xattr::remove(&mt, &mut chain, kind.name()) {
                Err(FsError::NoAttr) => Ok(()),
                other => other,
            },
        };
        state.xattr = chain;
        state.blocks = state.blocks.saturating_add_signed(mt.blocks_delta());
        if result.is_err() {
            // Whatever the chain became is what the inode must record.
            self.store_inode(tx, state)?;
        }
        result
    }

    /// After a chmod of the inode held by `state` (in `tx`, under its
    /// lock): its stored access ACL follows the new mode (see the module
    /// docs). The caller stores the inode.
    pub(crate) fn acl_follow_mode(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
    ) -> FsResult<()> {
        let Some(mut acl) = stored_acl(&self.cache, state, AclKind::Access)? else {
            return Ok(());
        };
        acl.chmod(state.permissions);
        self.put_acl_xattr(
            tx,
            state,
            AclKind::Access,
            Some(&acl.encode()),
            SetMode::Upsert,
        )
    }

    /// The default ACL of directory `parent` (held by `parent`), for a
    /// new inode of `file_type` asking for `perm` by a caller with `umask`
    /// (see [`inherit`]).
    pub(crate) fn inherit_acls(
        &self,
        parent: &InodeState,
        file_type: FileType,
        perm: u16,
        umask: u32,
    ) -> FsResult<Inherited> {
        let default = if file_type == FileType::Symlink {
            None
        } else {
            stored_acl(&self.cache, parent, AclKind::Default)?
        };
        Ok(inherit(default.as_ref(), file_type, perm, umask))
    }

    /// Stores what a new inode (held by `state`, created in `tx`)
    /// inherited; the caller stores the inode.
    pub(crate) fn store_inherited(
        &self,
        tx: &TxHandle<'_>,
        state: &mut InodeState,
        inherited: &Inherited,
    ) -> FsResult<()> {
        if let Some(acl) = &inherited.access {
            let value = acl.encode();
            self.put_acl_xattr(tx, state, AclKind::Access, Some(&value), SetMode::Upsert)?;
        }
        if let Some(acl) = &inherited.default {
            let value = acl.encode();
            self.put_acl_xattr(tx, state, AclKind::Default, Some(&value), SetMode::Upsert)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(tag: u16, perm: u16, id: u32) -> AclEntry {
        AclEntry { tag, perm, id }
    }

    fn acl(entries: &[AclEntry]) -> PosixAcl {
        let acl = PosixAcl {
            entries: entries.to_vec(),
        };
        acl.validate().expect("valid");
        acl
    }

    fn minimal(u: u16, g: u16, o: u16) -> PosixAcl {
        acl(&[
            e(ACL_USER_OBJ, u, ACL_UNDEFINED_ID),
            e(ACL_GROUP_OBJ, g, ACL_UNDEFINED_ID),
            e(ACL_OTHER, o, ACL_UNDEFINED_ID),
        ])
    }

    fn named(u: u16, g: u16, m: u16, o: u16) -> PosixAcl {
        acl(&[
            e(ACL_USER_OBJ, u, ACL_UNDEFINED_ID),
            e(ACL_USER, 7, 1000),
            e(ACL_GROUP_OBJ, g, ACL_UNDEFINED_ID),
            e(ACL_GROUP, 5, 2000),
            e(ACL_MASK, m, ACL_UNDEFINED_ID),
            e(ACL_OTHER, o, ACL_UNDEFINED_ID),
        ])
    }

    #[test]
    fn encoding_round_trips_and_matches_the_kernel_layout() {
        let a = named(6, 4, 5, 0);
        let bytes = a.encode();
        assert_eq!(bytes.len(), 4 + 6 * 8);
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        // USER_OBJ rw-, undefined id.
        assert_eq!(&bytes[4..12], &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff]);
        // USER 1000 rwx.
        assert_eq!(&bytes[12..20], &[2, 0, 7, 0, 0xe8, 0x03, 0, 0]);
        assert_eq!(PosixAcl::decode(&bytes).unwrap(), Some(a));
        assert_eq!(PosixAcl::decode(&[2, 0, 0, 0]).unwrap(), None);
    }

    #[test]
    fn malformed_acls_are_refused() {
        let good = named(6, 4, 5, 0).encode();
        assert!(matches!(
            PosixAcl::decode(&good[..good.len() - 1]),
            Err(FsError::Invalid(_))
        ));
        assert!(matches!(
            PosixAcl::decode(&[2, 0]),
            Err(FsError::Invalid(_))
        ));
        let mut v3 = good.clone();
        v3[0] = 3;
        assert!(matches!(PosixAcl::decode(&v3), Err(FsError::NotSupported)));
        let cases: Vec<Vec<AclEntry>> = vec![
            // No OTHER.
            vec![e(ACL_USER_OBJ, 6, 0), e(ACL_GROUP_OBJ, 4, 0)],
            // Named user without a mask.
            vec![
                e(ACL_USER_OBJ, 6, 0),
                e(ACL_USER, 6, 5),
                e(ACL_GROUP_OBJ, 4, 0),
                e(ACL_OTHER, 4, 0),
            ],
            // Out of order.
            vec![
                e(ACL_GROUP_OBJ, 4, 0),
                e(ACL_USER_OBJ, 6, 0),
                e(ACL_OTHER, 4, 0),
            ],
            // Two USER_OBJ.
            vec![
                e(ACL_USER_OBJ, 6, 0),
                e(ACL_USER_OBJ, 6, 0),
                e(ACL_GROUP_OBJ, 4, 0),
                e(ACL_OTHER, 4, 0),
            ],
            // Bits beyond rwx.
            vec![
                e(ACL_USER_OBJ, 8, 0),
                e(ACL_GROUP_OBJ, 4, 0),
                e(ACL_OTHER, 4, 0),
            ],
            // Unknown tag.
            vec![
                e(ACL_USER_OBJ, 6, 0),
                e(0x40, 4, 0),
                e(ACL_GROUP_OBJ, 4, 0),
                e(ACL_OTHER, 4, 0),
            ],
        ];
        for entries in cases {
            let bytes = PosixAcl { entries }.encode();
            assert!(
                matches!(PosixAcl::decode(&bytes), Err(FsError::Invalid(_))),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn equivalent_mode_uses_the_mask_for_the_group_bits() {
        assert_eq!(minimal(6, 4, 0).equiv_mode(0o2000), (0o2640, false));
        assert_eq!(named(7, 7, 5, 1).equiv_mode(0o777), (0o751, true));
    }

    #[test]
    fn chmod_rewrites_owner_mask_and_other() {
        let mut a = named(7, 7, 7, 7);
        a.chmod(0o640);
        let perms: Vec<u16> = a.entries().iter().map(|e| e.perm).collect();
        // Named entries and the group_obj stay; the mask takes the group bits.
        assert_eq!(perms, vec![6, 7, 7, 5, 4, 0]);
        let mut m = minimal(7, 7, 7);
        m.chmod(0o750);
        let perms: Vec<u16> = m.entries().iter().map(|e| e.perm).collect();
        assert_eq!(perms, vec![7, 5, 0]);
    }

    #[test]
    fn inheritance_masks_mode_and_acl_and_skips_the_umask() {
        // No default ACL: the umask applies.
        let plain = inherit(None, FileType::Regular, 0o666, 0o022);
        assert_eq!(plain.perm, 0o644);
        assert!(plain.access.is_none() && plain.default.is_none());
        // A minimal default ACL: mode & ACL, no ACL stored, umask ignored.
        let d = minimal(7, 5, 0);
        let f = inherit(Some(&d), FileType::Regular, 0o666, 0o077);
        assert_eq!(f.perm, 0o640);
        assert!(f.access.is_none() && f.default.is_none());
        // A named default ACL: the mask takes the group bits of the mode.
        let d = named(7, 5, 7, 5);
        let f = inherit(Some(&d), FileType::Regular, 0o664, 0o077);
        assert_eq!(f.perm, 0o664 & 0o775);
        let perms: Vec<u16> = f.access.unwrap().entries().iter().map(|e| e.perm).collect();
        assert_eq!(perms, vec![6, 7, 5, 5, 6, 4]);
        // A directory also gets the default ACL itself.
        let dir = inherit(Some(&d), FileType::Directory, 0o2777, 0o077);
        assert_eq!(dir.perm, 0o2775);
        assert_eq!(dir.default, Some(d.clone()));
        // Symlinks: nothing.
        let link = inherit(Some(&d), FileType::Symlink, 0o777, 0o077);
        assert_eq!(link.perm, 0o777);
        assert!(link.access.is_none());
    }
}
