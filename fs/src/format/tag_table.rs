//! The tag table (§7): 8-byte data-block tags, ⌊P/8⌋ per tag-table block.
//!
//! A tag is crc32c (4) then generation (4), as the engine's [`Tag`] defines
//! them (§2). Where a data block's tag lives is
//! [`Layout::tag_location`](super::layout::Layout::tag_location); these
//! helpers read and write one tag at such a payload offset. The tag of a
//! free block, a metadata block or an unwritten extent's block is
//! meaningless and not checked.

use super::layout::TAG_SIZE;
use super::le::{Reader, Writer};
use super::{FormatError, Problem, Structure, Tag};

const S: Structure = Structure::TagTable;

/// The 8 on-disk bytes of a tag.
pub fn encode_tag(tag: Tag) -> [u8; TAG_SIZE] {
    let mut bytes = [0u8; TAG_SIZE];
    bytes[..4].copy_from_slice(&tag.crc.to_le_bytes());
    bytes[4..].copy_from_slice(&tag.gen.to_le_bytes());
    bytes
}

/// The tag of 8 on-disk bytes.
pub fn decode_tag(bytes: [u8; TAG_SIZE]) -> Tag {
    let [c0, c1, c2, c3, g0, g1, g2, g3] = bytes;
    Tag {
        crc: u32::from_le_bytes([c0, c1, c2, c3]),
        gen: u32::from_le_bytes([g0, g1, g2, g3]),
    }
}

fn check_offset(offset: usize) -> Result<(), FormatError> {
    if offset % TAG_SIZE != 0 {
        return Err(FormatError::invalid(
            S,
            "offset",
            Problem::Inconsistent("not a multiple of 8"),
        ));
    }
    Ok(())
}

/// The tag at payload offset `offset` of a tag-table block.
pub fn read_tag(payload: &[u8], offset: usize) -> Result<Tag, FormatError> {
    check_offset(offset)?;
    Reader::new(payload, S).array(offset).map(decode_tag)
}

/// Stores `tag` at payload offset `offset` of a tag-table block.
pub fn write_tag(payload: &mut [u8], offset: usize, tag: Tag) -> Result<(), FormatError> {
    check_offset(offset)?;
    Writer::new(payload, S).bytes(offset, &encode_tag(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::layout::Layout;

    #[test]
    fn tags_are_crc_then_generation() {
        let tag = Tag {
            crc: 0x1122_3344,
            gen: 0x5566_7788,
        };
        assert_eq!(
            encode_tag(tag),
            [0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55]
        );
        assert_eq!(decode_tag(encode_tag(tag)), tag);
    }

    #[test]
    fn tags_land_where_the_layout_says() {
        let layout = Layout::new(100_000, 1024, 100, 1024).unwrap();
        let block = layout.data.start + 123; // second tag-table block, slot 1
        let at = layout.tag_location(block).unwrap();
        assert_eq!(at.block, layout.tag_table.start + 1);
        let mut payload = vec![0u8; layout.payload_len()];
        let tag = Tag { crc: 7, gen: 9 };
        write_tag(&mut payload, at.offset, tag).unwrap();
        assert_eq!(&payload[8..16], &[7, 0, 0, 0, 9, 0, 0, 0]);
        assert_eq!(read_tag(&payload, at.offset), Ok(tag));
        assert!(read_tag(&payload, 972).is_err()); // not aligned
        assert!(read_tag(&payload, 976).is_err()); // past the end
        assert!(write_tag(&mut payload, usize::MAX - 7, tag).is_err());
    }
}
