use serde::{Deserialize, Serialize};

/// Chunks are checksummed in blocks of this size so that a ranged read can be
/// verified without reading the whole chunk.
pub const BLOCK_SIZE: usize = 64 * 1024;

/// CRC32C of each [`BLOCK_SIZE`] block of a chunk, the last one possibly short.
/// Computed by the writer, checked by every replica on receipt and by every
/// reader, stored beside the data on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockCrcs(pub Vec<u32>);

impl BlockCrcs {
    pub fn compute(data: &[u8]) -> BlockCrcs {
        BlockCrcs(data.chunks(BLOCK_SIZE).map(crc32c::crc32c).collect())
    }

    /// Number of blocks a chunk of `len` bytes has.
    pub fn blocks_for(len: u64) -> usize {
        len.div_ceil(BLOCK_SIZE as u64) as usize
    }

    /// One checksum for the whole chunk, derived from the block checksums, as
    /// shown to users by `cairn locate`.
    pub fn summary(&self) -> u32 {
        let mut bytes = Vec::with_capacity(self.0.len() * 4);
        for c in &self.0 {
            bytes.extend_from_slice(&c.to_le_bytes());
        }
        crc32c::crc32c(&bytes)
    }

    /// Verify `data`, which starts at block `first_block` of the chunk. Returns
    /// the index of the first bad block.
    pub fn verify(&self, first_block: usize, data: &[u8]) -> Result<(), usize> {
        for (i, block) in data.chunks(BLOCK_SIZE).enumerate() {
            let idx = first_block + i;
            match self.0.get(idx) {
                Some(&want) if want == crc32c::crc32c(block) => {}
                _ => return Err(idx),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_detects_flip() {
        let mut data = vec![7u8; BLOCK_SIZE * 2 + 10];
        let crcs = BlockCrcs::compute(&data);
        assert_eq!(crcs.0.len(), 3);
        assert_eq!(BlockCrcs::blocks_for(data.len() as u64), 3);
        assert!(crcs.verify(0, &data).is_ok());
        assert!(crcs.verify(1, &data[BLOCK_SIZE..]).is_ok());
        data[BLOCK_SIZE + 5] ^= 1;
        assert_eq!(crcs.verify(0, &data), Err(1));
        assert_eq!(BlockCrcs::compute(&[]).0.len(), 0);
    }
}
