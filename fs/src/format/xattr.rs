//! Extended attributes (§9): the blob of all of an inode's xattrs, the
//! chain of xattr blocks (kind 12) that stores it, and the mapping between
//! full attribute names ("user.foo") and (namespace, name) pairs.
//!
//! Blob entry: namespace (1), name length (1), value length (4, le), name
//! without its namespace prefix, value. Chain block payload: next block (8),
//! its generation (8), bytes of blob in this block (4), zero (4), blob bytes.

use std::collections::HashSet;

use super::le::{Reader, Writer};
use super::{check_range, check_zero, BlockRef, FormatError, Problem, Structure};

/// Longest stored name (without prefix); also the longest full name
/// accepted (`XATTR_NAME_MAX`).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest value (`XATTR_SIZE_MAX`).
pub const XATTR_VALUE_MAX: usize = 65536;
/// Bytes of an entry before its name.
pub const XATTR_ENTRY_HEADER_LEN: usize = 6;
/// Bytes of the chain block header.
pub const XATTR_BLOCK_HEADER_LEN: usize = 24;

const BLOB: Structure = Structure::XattrBlob;
const BLOCK: Structure = Structure::XattrBlock;
const NAME: Structure = Structure::XattrName;

/// An xattr namespace (§9 numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum XattrNamespace {
    /// "user."
    User = 1,
    /// "trusted."
    Trusted = 2,
    /// "security."
    Security = 3,
    /// exactly "system.posix_acl_access" (stored name empty)
    PosixAclAccess = 4,
    /// exactly "system.posix_acl_default" (stored name empty)
    PosixAclDefault = 5,
    /// any other "system." name
    System = 6,
}

impl XattrNamespace {
    /// Every namespace.
    pub const ALL: [XattrNamespace; 6] = [
        XattrNamespace::User,
        XattrNamespace::Trusted,
        XattrNamespace::Security,
        XattrNamespace::PosixAclAccess,
        XattrNamespace::PosixAclDefault,
        XattrNamespace::System,
    ];

    /// The on-disk number.
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// From the on-disk number.
    pub fn from_u8(value: u8) -> Result<XattrNamespace, FormatError> {
        XattrNamespace::ALL
            .into_iter()
            .find(|ns| ns.to_u8() == value)
            .ok_or_else(|| {
                FormatError::invalid(
                    BLOB,
                    "namespace",
                    Problem::UnknownValue {
                        value: value.into(),
                    },
                )
            })
    }

    /// What the full name starts with.
    pub fn prefix(self) -> &'static [u8] {
        match self {
            XattrNamespace::User => b"user.",
            XattrNamespace::Trusted => b"trusted.",
            XattrNamespace::Security => b"security.",
            XattrNamespace::PosixAclAccess => b"system.posix_acl_access",
            XattrNamespace::PosixAclDefault => b"system.posix_acl_default",
            XattrNamespace::System => b"system.",
        }
    }

    /// Whether the stored name is always empty (the ACL names).
    pub fn is_whole_name(self) -> bool {
        matches!(
            self,
            XattrNamespace::PosixAclAccess | XattrNamespace::PosixAclDefault
        )
    }
}

/// Splits a full attribute name into its namespace and stored name.
/// Unknown prefixes, empty stored names and full names over 255 bytes are
/// refused (the caller answers `EOPNOTSUPP`, `EINVAL` or `ERANGE`).
pub fn split_name(full: &[u8]) -> Result<(XattrNamespace, &[u8]), FormatError> {
    if full.len() > XATTR_NAME_MAX {
        return Err(FormatError::invalid(
            NAME,
            "name",
            Problem::TooLong {
                len: full.len() as u64,
                max: XATTR_NAME_MAX as u64,
            },
        ));
    }
    if full.contains(&0) {
        return Err(FormatError::invalid(NAME, "name", Problem::InvalidName));
    }
    for ns in [
        XattrNamespace::PosixAclAccess,
        XattrNamespace::PosixAclDefault,
    ] {
        if full == ns.prefix() {
            return Ok((ns, &[]));
        }
    }
    for ns in [
        XattrNamespace::User,
        XattrNamespace::Trusted,
        XattrNamespace::Security,
        XattrNamespace::System,
    ] {
        if let Some(rest) = full.strip_prefix(ns.prefix()) {
            if rest.is_empty() {
                return Err(FormatError::invalid(NAME, "name", Problem::InvalidName));
            }
            return Ok((ns, rest));
        }
    }
    Err(FormatError::invalid(
        NAME,
        "namespace",
        Problem::Inconsistent("unknown namespace prefix"),
    ))
}

/// The full name of a (namespace, stored name) pair.
pub fn full_name(namespace: XattrNamespace, name: &[u8]) -> Vec<u8> {
    [namespace.prefix(), name].concat()
}

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Xattr {
    pub namespace: XattrNamespace,
    /// The name without its namespace prefix.
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl Xattr {
    /// An attribute from its full name.
    pub fn new(full: &[u8], value: &[u8]) -> Result<Xattr, FormatError> {
        let (namespace, name) = split_name(full)?;
        let xattr = Xattr {
            namespace,
            name: name.to_vec(),
            value: value.to_vec(),
        };
        xattr.validate()?;
        Ok(xattr)
    }

    /// The full name ("user.foo").
    pub fn full_name(&self) -> Vec<u8> {
        full_name(self.namespace, &self.name)
    }

    /// Bytes it takes in the blob.
    pub fn encoded_len(&self) -> usize {
        XATTR_ENTRY_HEADER_LEN + self.name.len() + self.value.len()
    }

    /// Checks name and value against §9.
    pub fn validate(&self) -> Result<(), FormatError> {
        if self.name.len() > XATTR_NAME_MAX {
            return Err(FormatError::invalid(
                BLOB,
                "name",
                Problem::TooLong {
                    len: self.name.len() as u64,
                    max: XATTR_NAME_MAX as u64,
                },
            ));
        }
        if self.name.is_empty() != self.namespace.is_whole_name() || self.name.contains(&0) {
            return Err(FormatError::invalid(BLOB, "name", Problem::InvalidName));
        }
        if self.value.len() > XATTR_VALUE_MAX {
            return Err(FormatError::invalid(
                BLOB,
                "value",
                Problem::TooLong {
                    len: self.value.len() as u64,
                    max: XATTR_VALUE_MAX as u64,
                },
            ));
        }
        Ok(())
    }
}

fn check_unique(xattrs: &[Xattr]) -> Result<(), FormatError> {
    let mut seen = HashSet::with_capacity(xattrs.len());
    for (i, x) in xattrs.iter().enumerate() {
        if !seen.insert((x.namespace, x.name.as_slice())) {
            return Err(FormatError::invalid(
                BLOB,
                "name",
                Problem::Duplicate { index: i },
            ));
        }
    }
    Ok(())
}

/// The blob of a list of attributes (in the order given; names unique).
pub fn encode_blob(xattrs: &[Xattr]) -> Result<Vec<u8>, FormatError> {
    for x in xattrs {
        x.validate()?;
    }
    check_unique(xattrs)?;
    let mut blob = Vec::with_capacity(xattrs.iter().map(Xattr::encoded_len).sum());
    for x in xattrs {
        blob.push(x.namespace.to_u8());
        blob.push(x.name.len() as u8);
        blob.extend_from_slice(&(x.value.len() as u32).to_le_bytes());
        blob.extend_from_slice(&x.name);
        blob.extend_from_slice(&x.value);
    }
    Ok(blob)
}

/// The attributes of a blob.
pub fn decode_blob(blob: &[u8]) -> Result<Vec<Xattr>, FormatError> {
    let r = Reader::new(blob, BLOB);
    let mut xattrs = Vec::new();
    let mut at = 0usize;
    while at < blob.len() {
        let namespace = XattrNamespace::from_u8(r.u8(at)?)?;
        let name_len = usize::from(r.u8(at + 1)?);
        let value_len = r.u32(at + 2)? as usize;
        check_range(BLOB, "value", value_len as u64, 0, XATTR_VALUE_MAX as u64)?;
        let name = r.bytes(at + XATTR_ENTRY_HEADER_LEN, name_len)?;
        let value = r.bytes(at + XATTR_ENTRY_HEADER_LEN + name_len, value_len)?;
        let x = Xattr {
            namespace,
            name: name.to_vec(),
            value: value.to_vec(),
        };
        x.validate()?;
        at += x.encoded_len();
        xattrs.push(x);
    }
    check_unique(&xattrs)?;
    Ok(xattrs)
}

/// Blob bytes one chain block of payload `payload_len` holds.
pub fn block_blob_capacity(payload_len: usize) -> usize {
    payload_len.saturating_sub(XATTR_BLOCK_HEADER_LEN)
}

/// The pieces of `blob`, one per chain block, in chain order.
pub fn split_blob(blob: &[u8], payload_len: usize) -> impl Iterator<Item = &[u8]> {
    blob.chunks(block_blob_capacity(payload_len).max(1))
}

/// Writes one chain block: the next block (`None` at the end) and this
/// block's piece of the blob (1..=P−24 bytes); the rest zero.
pub fn encode_xattr_block(
    next: Option<BlockRef>,
    piece: &[u8],
    payload: &mut [u8],
) -> Result<(), FormatError> {
    check_range(
        BLOCK,
        "blob_bytes",
        piece.len() as u64,
        1,
        block_blob_capacity(payload.len()).min(u32::MAX as usize) as u64,
    )?;
    let mut w = Writer::new(payload, BLOCK);
    w.zero_all();
    let (block, generation) = BlockRef::to_pair(next);
    w.u64(0, block)?;
    w.u64(8, generation)?;
    w.u32(16, piece.len() as u32)?;
    w.bytes(XATTR_BLOCK_HEADER_LEN, piece)
}

/// Reads one chain block: the next block and this block's piece of the
/// blob.
pub fn decode_xattr_block(payload: &[u8]) -> Result<(Option<BlockRef>, &[u8]), FormatError> {
    let r = Reader::new(payload, BLOCK);
    r.require(XATTR_BLOCK_HEADER_LEN)?;
    let next = BlockRef::from_optional(r.u64(0)?, r.u64(8)?, BLOCK, "next_generation")?;
    let len = r.u32(16)? as usize;
    check_zero(BLOCK, "reserved", r.bytes(20, 4)?)?;
    check_range(
        BLOCK,
        "blob_bytes",
        len as u64,
        1,
        block_blob_capacity(payload.len()) as u64,
    )?;
    let end = XATTR_BLOCK_HEADER_LEN + len;
    check_zero(BLOCK, "unused", &payload[end..])?;
    Ok((next, &payload[XATTR_BLOCK_HEADER_LEN..end]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn full_names_map_to_namespaces() {
        assert_eq!(
            split_name(b"user.foo").unwrap(),
            (XattrNamespace::User, &b"foo"[..])
        );
        assert_eq!(
            split_name(b"trusted.x").unwrap(),
            (XattrNamespace::Trusted, &b"x"[..])
        );
        assert_eq!(
            split_name(b"security.selinux").unwrap(),
            (XattrNamespace::Security, &b"selinux"[..])
        );
        assert_eq!(
            split_name(b"system.posix_acl_access").unwrap(),
            (XattrNamespace::PosixAclAccess, &b""[..])
        );
        assert_eq!(
            split_name(b"system.posix_acl_default").unwrap(),
            (XattrNamespace::PosixAclDefault, &b""[..])
        );
        assert_eq!(
            split_name(b"system.nfs4_acl").unwrap(),
            (XattrNamespace::System, &b"nfs4_acl"[..])
        );
        for bad in [&b"user."[..], b"other.x", b"user", b"", b"user.a\0b"] {
            assert!(split_name(bad).is_err(), "{bad:?}");
        }
        let mut long = b"user.".to_vec();
        long.resize(256, b'x');
        assert!(split_name(&long).is_err());
        long.truncate(255);
        assert!(split_name(&long).is_ok());
        for full in [&b"user.foo"[..], b"system.posix_acl_default", b"system.x"] {
            let (ns, name) = split_name(full).unwrap();
            assert_eq!(full_name(ns, name), full);
        }
    }

    #[test]
    fn golden_blob() {
        let xattrs = vec![
            Xattr::new(b"user.ab", b"xyz").unwrap(),
            Xattr::new(b"system.posix_acl_access", &[9]).unwrap(),
        ];
        let blob = encode_blob(&xattrs).unwrap();
        let want: &[u8] = &[
            1, 2, 3, 0, 0, 0, b'a', b'b', b'x', b'y', b'z', // user.ab = xyz
            4, 0, 1, 0, 0, 0, 9, // system.posix_acl_access = [9]
        ];
        assert_eq!(blob, want);
        assert_eq!(decode_blob(&blob).unwrap(), xattrs);
        assert_eq!(decode_blob(&[]).unwrap(), vec![]);
    }

    #[test]
    fn bad_blobs_are_refused() {
        let field = |blob: &[u8]| decode_blob(blob).unwrap_err().field();
        assert_eq!(field(&[7, 1, 0, 0, 0, 0, b'a']), Some("namespace"));
        assert_eq!(field(&[1, 0, 0, 0, 0, 0]), Some("name")); // empty user name
        assert_eq!(field(&[4, 1, 0, 0, 0, 0, b'a']), Some("name")); // ACL with a name
        assert_eq!(field(&[1, 1, 1, 0, 1, 0, b'a']), Some("value")); // 65537 bytes
        assert_eq!(field(&[1, 1, 5, 0, 0, 0, b'a', 1]), None); // value runs past the end
        assert_eq!(field(&[1, 1, 0, 0, 0]), None); // truncated header
        assert_eq!(
            field(&[1, 1, 0, 0, 0, 0, b'a', 1, 1, 0, 0, 0, 0, b'a']),
            Some("name") // duplicate
        );
        let big = Xattr {
            namespace: XattrNamespace::User,
            name: b"v".to_vec(),
            value: vec![0; 65537],
        };
        assert!(encode_blob(&[big]).is_err());
        let max = Xattr {
            namespace: XattrNamespace::User,
            name: vec![b'n'; 255],
            value: vec![1; 65536],
        };
        let blob = encode_blob(std::slice::from_ref(&max)).unwrap();
        assert_eq!(decode_blob(&blob).unwrap(), vec![max]);
    }

    #[test]
    fn chain_blocks() {
        let blob: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let pieces: Vec<&[u8]> = split_blob(&blob, 976).collect();
        assert_eq!(
            pieces.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [952, 952, 952, 144]
        );
        let mut payload = vec![0xffu8; 976];
        let next = Some(BlockRef {
            block: 0x10,
            generation: 0x20,
        });
        encode_xattr_block(next, pieces[3], &mut payload).unwrap();
        assert_eq!(
            &payload[..24],
            &[0x10, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 144, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(decode_xattr_block(&payload).unwrap(), (next, pieces[3]));
        let mut bad = payload.clone();
        bad[16] = 0;
        assert_eq!(
            decode_xattr_block(&bad).unwrap_err().field(),
            Some("blob_bytes")
        );
        bad[16] = 0xff;
        bad[17] = 0xff;
        assert_eq!(
            decode_xattr_block(&bad).unwrap_err().field(),
            Some("blob_bytes")
        );
        let mut bad = payload.clone();
        bad[900] = 1;
        assert_eq!(
            decode_xattr_block(&bad).unwrap_err().field(),
            Some("unused")
        );
        let mut bad = payload.clone();
        bad[0] = 0;
        assert_eq!(
            decode_xattr_block(&bad).unwrap_err().field(),
            Some("next_generation")
        );
        assert!(encode_xattr_block(None, &[], &mut payload).is_err());
        assert!(encode_xattr_block(None, &[1; 953], &mut payload).is_err());
    }

    fn xattr_strategy() -> impl Strategy<Value = Xattr> {
        (
            prop::sample::select(XattrNamespace::ALL.to_vec()),
            prop::collection::vec(1u8..=255, 1..=40),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(namespace, name, value)| Xattr {
                namespace,
                name: if namespace.is_whole_name() {
                    Vec::new()
                } else {
                    name
                },
                value,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn blob_round_trip(raw in prop::collection::vec(xattr_strategy(), 0..12)) {
            let mut seen = HashSet::new();
            let xattrs: Vec<Xattr> = raw
                .into_iter()
                .filter(|x| seen.insert((x.namespace, x.name.clone())))
                .collect();
            let blob = encode_blob(&xattrs).unwrap();
            prop_assert_eq!(decode_blob(&blob).unwrap(), xattrs.clone());
            // Through a chain of 1 KiB blocks and back.
            let mut joined = Vec::new();
            for piece in split_blob(&blob, 976) {
                let mut payload = vec![0u8; 976];
                encode_xattr_block(None, piece, &mut payload).unwrap();
                joined.extend_from_slice(decode_xattr_block(&payload).unwrap().1);
            }
            prop_assert_eq!(joined, blob);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1100)) {
            let _ = decode_blob(&bytes);
            let _ = decode_xattr_block(&bytes);
            let _ = split_name(&bytes);
        }
    }
}
