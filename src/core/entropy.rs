//! Where the state machines get their random bytes (challenge RANDs, TMSIs): an input
//! like the clock, so that a test can fix it. Production uses [`CsprngEntropy`] (a CSPRNG seeded from the OS); tests use
//! [`SeededEntropy`], which gives the same bytes for the same seed and call order.

use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// A source of random bytes.
pub trait Entropy: Send + Sync {
    /// Fills `buf`; `false` if no randomness could be had (then `buf` means nothing).
    fn fill(&self, buf: &mut [u8]) -> bool;
}

/// The production source: `rand`'s thread-local CSPRNG (ChaCha12, seeded from the
/// operating system's and reseeded from it every 64 KiB of output), which hands out a
/// RAND or a TMSI without a system call each (two `getrandom` calls per registration
/// before).
#[derive(Debug, Default, Clone, Copy)]
pub struct CsprngEntropy;

impl Entropy for CsprngEntropy {
    fn fill(&self, buf: &mut [u8]) -> bool {
        rand::RngCore::fill_bytes(&mut rand::rng(), buf);
        true
    }
}

/// A deterministic stream for tests and simulations: block `n` of the stream is
/// SHA-256(seed ‖ n), both big-endian u64, and each [`Entropy::fill`] takes whole
/// blocks (a fill of 4 bytes uses one block). The same seed and the same sequence of
/// fills give the same bytes, every run.
///
/// Never for production: whoever knows the seed predicts every RAND and TMSI.
///
/// ```
/// use trunkd::core::entropy::{Entropy, SeededEntropy};
/// let (a, b) = (SeededEntropy::new(7), SeededEntropy::new(7));
/// let (mut x, mut y) = ([0u8; 16], [0u8; 16]);
/// assert!(a.fill(&mut x) && b.fill(&mut y));
/// assert_eq!(x, y);
/// ```
#[derive(Debug)]
pub struct SeededEntropy {
    seed: u64,
    next_block: AtomicU64,
}

impl SeededEntropy {
    /// The stream of `seed`, from its first block.
    pub fn new(seed: u64) -> Self {
        SeededEntropy {
            seed,
            next_block: AtomicU64::new(0),
        }
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, buf: &mut [u8]) -> bool {
        for chunk in buf.chunks_mut(32) {
            let n = self.next_block.fetch_add(1, Ordering::Relaxed);
            let block = Sha256::new()
                .chain_update(self.seed.to_be_bytes())
                .chain_update(n.to_be_bytes())
                .finalize();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(e: &dyn Entropy, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        assert!(e.fill(&mut v));
        v
    }

    #[test]
    fn the_same_seed_gives_the_same_stream_and_another_seed_another() {
        let (a, b, c) = (
            SeededEntropy::new(1),
            SeededEntropy::new(1),
            SeededEntropy::new(2),
        );
        let first = draw(&a, 40);
        assert_eq!(first, draw(&b, 40));
        assert_ne!(first, draw(&c, 40));
        assert_ne!(first[..32], first[32..], "blocks differ");
        assert_ne!(draw(&a, 40), first, "the stream moves on");
    }

    #[test]
    fn a_block_is_sha256_of_seed_and_counter() {
        let e = SeededEntropy::new(5);
        let mut want = [0u8; 16];
        want.copy_from_slice(&Sha256::digest([5u64.to_be_bytes(), 0u64.to_be_bytes()].concat())[..16]);
        assert_eq!(draw(&e, 16), want);
    }
}
